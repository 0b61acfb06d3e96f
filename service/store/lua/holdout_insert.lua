-- The learner's holdout inserts for one batch: a capped list of the most recent held-out
-- entries (newest first), idempotent by stream id (its own last id: the replay buffer keeps
-- another), fenced like every learner write.
-- KEYS: holdout list, reservoir meta hash (field holdout_last_id), fence
-- ARGV: fencing token, holdout capacity, then per item: stream id, entry
-- Returns, per item, 1 (inserted) or -2 (inserted before: a re-read after a restart).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local capacity = tonumber(ARGV[2])
local last = redis.call('HGET', KEYS[2], 'holdout_last_id') or '0-0'

local function split(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function after(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am > bm or (am == bm and as > bs)
end

local out = {}
local added = false
for i = 3, #ARGV, 2 do
  if after(ARGV[i], last) then
    redis.call('LPUSH', KEYS[1], ARGV[i + 1])
    last = ARGV[i]
    added = true
    out[#out + 1] = 1
  else
    out[#out + 1] = -2
  end
end
if added then
  redis.call('LTRIM', KEYS[1], 0, capacity - 1)
  redis.call('HSET', KEYS[2], 'holdout_last_id', last)
end
return out
