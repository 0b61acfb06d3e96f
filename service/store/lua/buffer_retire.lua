-- Removes the given slots from a replay buffer in one step, closing the gaps as the in-memory
-- buffers' retire does: survivors keep their order and move down, so slots stay the prefix
-- 0..size-1 and the learner's mirror stays slot for slot identical. Used on concept drift to
-- drop samples that contradict the new concept; seen and last_id stay (the stream moved on).
-- KEYS: buffer hash (slot -> entry), meta hash, class index (see buffer_insert.lua), fence
-- ARGV: fencing token, then the slots to remove (a repeated slot counts once)
-- Returns the number of items removed.
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local SCALE = 4294967296
local size = redis.call('HLEN', KEYS[1])
local drop, lowest = {}, size
-- Validate every slot before the first write: a slot outside the buffer means the caller's
-- mirror has diverged, and a half-done retire would make it worse.
for i = 2, #ARGV do
  local s = tonumber(ARGV[i])
  if s == nil or s % 1 ~= 0 or s < 0 or s >= size then
    return redis.error_reply('ERR slot ' .. ARGV[i] .. ' is not in the buffer of ' .. size)
  end
  drop[s] = true
  lowest = math.min(lowest, s)
end

local removed, delta = 0, {}
for slot = lowest, size - 1 do
  local score = redis.call('ZSCORE', KEYS[3], slot)
  local class = score and math.floor(tonumber(score) / SCALE)
  if drop[slot] then
    removed = removed + 1
    redis.call('HDEL', KEYS[1], slot)
    if score then
      redis.call('ZREM', KEYS[3], slot)
      delta[class] = (delta[class] or 0) - 1
    end
  else
    local target = slot - removed
    redis.call('HSET', KEYS[1], target, redis.call('HGET', KEYS[1], slot))
    redis.call('HDEL', KEYS[1], slot)
    if score then
      redis.call('ZREM', KEYS[3], slot)
      redis.call('ZADD', KEYS[3], class * SCALE + target, target)
    end
  end
end
for c, d in pairs(delta) do
  redis.call('HINCRBY', KEYS[2], 'count:' .. c, d)
end
return removed
