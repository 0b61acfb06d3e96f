-- First start of a deployment (or a later one): record what must agree with stored state,
-- grow the vocabulary by the declared labels, and create version 0 if no version exists.
-- KEYS: meta, vocab hash, vocab order list, current, versions zset, statuses, version 0 key,
--       next version counter
-- ARGV: input_dim, label_type, model_name, features (schema JSON, '' for vectors), v0 meta json,
--       v0 weights, then declared labels
-- Returns {"mismatch", field, stored, given} or {"ok", created (0|1)}
local fields = {'input_dim', 'label_type', 'model_name', 'features'}
for i, field in ipairs(fields) do
  local stored = redis.call('HGET', KEYS[1], field)
  -- A deployment made before `features` was recorded took vectors: '' is what it stored.
  if field == 'features' and not stored and redis.call('HEXISTS', KEYS[1], 'input_dim') == 1 then
    stored = ''
  end
  if stored and stored ~= ARGV[i] then
    return {'mismatch', field, stored, ARGV[i]}
  end
end
for i, field in ipairs(fields) do redis.call('HSETNX', KEYS[1], field, ARGV[i]) end

local size = tonumber(redis.call('HLEN', KEYS[2]))
for i = 7, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[i], size)
    redis.call('RPUSH', KEYS[3], ARGV[i])
    size = size + 1
  end
end

if redis.call('EXISTS', KEYS[4]) == 1 then return {'ok', 0} end
redis.call('HSET', KEYS[7], 'meta', ARGV[5], 'weights', ARGV[6])
redis.call('ZADD', KEYS[5], 0, 0)
redis.call('HSET', KEYS[6], 0, 'active')
redis.call('HSET', KEYS[4], 'version', 0, 'epoch', 1)
redis.call('SET', KEYS[8], 0)
return {'ok', 1}
