-- Replay-buffer inserts for one batch of stream entries, by policy, idempotent by stream id.
-- Each decision is models/replay.py's pure function on the same caller-supplied u, so the
-- learner's in-memory buffer, told the returned slots, holds the same items in the same slots.
-- Slots form the prefix 0..size-1: a free slot (while filling, or after a retire) is taken
-- before anything is evicted. Entries at or below meta.last_id were inserted before.
-- KEYS: buffer hash (slot -> entry), meta hash, class index (sorted set: member slot, score
--       class * 2^32 + slot), fence
-- ARGV: fencing token, policy ("reservoir" | "class-balanced" | "recent"), capacity, horizon
--       ("recent" only, else ignored), then per item: stream id, u in [0,1), class index, entry
-- Meta fields: seen, last_id, and per class c "seen:c" (inserted) and "count:c" (stored). Every
-- policy keeps the class bookkeeping, so MNEMO_BUFFER may change on a live deployment.
-- Returns, per item, the slot written (-1 not kept, -2 already inserted).
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local SCALE = 4294967296 -- 2^32 > any capacity: the index orders by class, then by slot
local MAX_CLASS = 2097152 -- 2^21: class * SCALE + slot stays an exact double
local policy = ARGV[2]
local capacity = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])

local function whole(n, low, high)
  return n ~= nil and n % 1 == 0 and n >= low and n < high
end

-- Validate everything before the first write: a script's writes survive its error reply.
if policy ~= 'reservoir' and policy ~= 'class-balanced' and policy ~= 'recent' then
  return redis.error_reply('ERR unknown buffer policy ' .. tostring(policy))
end
if not whole(capacity, 1, SCALE) or not whole(horizon, 0, math.huge) or (#ARGV - 4) % 4 ~= 0 then
  return redis.error_reply('ERR bad capacity, horizon or item count')
end
for i = 5, #ARGV, 4 do
  local u = tonumber(ARGV[i + 1])
  if not string.find(ARGV[i], '^%d+%-%d+$') or not u or u < 0 or u >= 1
      or not whole(tonumber(ARGV[i + 2]), 0, MAX_CLASS) then
    return redis.error_reply('ERR bad item ' .. ARGV[i] .. ': need a stream id, u in [0,1), a class')
  end
end
local size = redis.call('HLEN', KEYS[1])
if size > capacity then
  return redis.error_reply('ERR the buffer holds ' .. size .. ' items, more than capacity ' .. capacity)
end
if redis.call('ZCARD', KEYS[3]) ~= size then -- e.g. a buffer filled by learner_ingest.lua
  return redis.error_reply('ERR the class index does not cover the buffer: run buffer_reindex.lua')
end

local seen, last = 0, '0-0'
local class_seen, counts, classes = {}, {}, 0
local meta = redis.call('HGETALL', KEYS[2])
for i = 1, #meta, 2 do
  local field, value = meta[i], meta[i + 1]
  if field == 'seen' then
    seen = tonumber(value)
  elseif field == 'last_id' then
    last = value
  else
    local kind, c = string.match(field, '^(%a+):(%d+)$')
    if kind == 'seen' then
      class_seen[tonumber(c)] = tonumber(value)
      classes = classes + 1
    elseif kind == 'count' then
      counts[tonumber(c)] = tonumber(value)
    end
  end
end

local function split(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function after(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  return am > bm or (am == bm and as > bs)
end

local function slot_of(class, rank) -- the class's rank-th slot in ascending slot order
  local first = redis.call('ZCOUNT', KEYS[3], '-inf', class * SCALE - 1)
  return tonumber(redis.call('ZRANGE', KEYS[3], first + rank, first + rank)[1])
end

local function balanced_slot(class, u) -- models/replay.py: class_balanced_victim
  local largest, most = nil, -1
  for c, n in pairs(counts) do
    if n > most or (n == most and c < largest) then largest, most = c, n end
  end
  if counts[class] * classes < capacity and counts[class] + 1 < most then
    return slot_of(largest, math.floor(u * most))
  end
  local j = math.floor(u * class_seen[class])
  if j < counts[class] then return slot_of(class, j) end
  return -1
end

local out, dirty = {}, {}
for i = 5, #ARGV, 4 do
  local id, u, class, entry = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  if not after(id, last) then
    out[#out + 1] = -2
  else
    seen, last = seen + 1, id
    if not class_seen[class] then
      class_seen[class], classes = 0, classes + 1
    end
    class_seen[class] = class_seen[class] + 1
    counts[class] = counts[class] or 0
    dirty[class] = true
    local slot = -1
    if size < capacity then
      slot, size = size, size + 1
    elseif policy == 'class-balanced' then
      slot = balanced_slot(class, u)
    else
      local n = seen
      if policy == 'recent' then n = math.min(seen, capacity + horizon) end
      local j = math.floor(u * n)
      if j < capacity then slot = j end
    end
    if slot >= 0 then
      local old = redis.call('ZSCORE', KEYS[3], slot)
      if old then
        local c = math.floor(tonumber(old) / SCALE)
        counts[c], dirty[c] = (counts[c] or 0) - 1, true
      end
      redis.call('HSET', KEYS[1], slot, entry)
      redis.call('ZADD', KEYS[3], class * SCALE + slot, slot)
      counts[class] = counts[class] + 1
    end
    out[#out + 1] = slot
  end
end
if next(dirty) then
  redis.call('HSET', KEYS[2], 'seen', seen, 'last_id', last)
  for c in pairs(dirty) do
    redis.call('HSET', KEYS[2], 'count:' .. c, counts[c])
    if class_seen[c] then redis.call('HSET', KEYS[2], 'seen:' .. c, class_seen[c]) end
  end
end
return out
