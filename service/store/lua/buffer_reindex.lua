-- Rebuilds a replay buffer's class index and per-class counts from its entries, for a buffer
-- written without them (learner_ingest.lua keeps none), which buffer_insert.lua refuses.
-- KEYS: buffer hash (slot -> entry), meta hash, class index (see buffer_insert.lua), fence
-- ARGV: fencing token
-- Returns the number of slots indexed.
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local SCALE = 4294967296
redis.call('DEL', KEYS[3])
local meta = redis.call('HGETALL', KEYS[2])
for i = 1, #meta, 2 do
  if string.find(meta[i], '^count:%d+$') then redis.call('HDEL', KEYS[2], meta[i]) end
end
local entries = redis.call('HGETALL', KEYS[1])
local counts = {}
for i = 1, #entries, 2 do
  local slot = tonumber(entries[i])
  local class = struct.unpack('<i4', entries[i + 1]) -- codec.encode_entry's header
  redis.call('ZADD', KEYS[3], class * SCALE + slot, slot)
  counts[class] = (counts[class] or 0) + 1
end
for c, n in pairs(counts) do
  redis.call('HSET', KEYS[2], 'count:' .. c, n)
  -- A stored class counts as seen, or the class-balanced shares would leave it out.
  if tonumber(redis.call('HGET', KEYS[2], 'seen:' .. c) or '0') < n then
    redis.call('HSET', KEYS[2], 'seen:' .. c, n)
  end
end
return #entries / 2
