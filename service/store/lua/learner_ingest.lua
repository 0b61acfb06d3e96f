-- The learner's inserts for one batch of stream entries, idempotent by stream id:
-- holdout items go to a capped recent list, the rest through Algorithm R into a hash of K
-- slots. Entries at or below meta.last_id were inserted before (a re-read after a restart).
-- KEYS: reservoir hash (slot -> entry), reservoir meta hash, holdout list, fence
-- ARGV: fencing token, capacity, holdout capacity, then per item: stream id, kind ("r"|"h"),
--       u in [0,1), entry
-- Returns, per item, the reservoir slot written (-1 not kept, -2 already inserted, -3 holdout).
if redis.call('GET', KEYS[4]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local capacity = tonumber(ARGV[2])
local holdout_capacity = tonumber(ARGV[3])
local seen = tonumber(redis.call('HGET', KEYS[2], 'seen') or '0')
local last = redis.call('HGET', KEYS[2], 'last_id') or '0-0'

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
local holdout_added = false
for i = 4, #ARGV, 4 do
  local id, kind, u, entry = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if not after(id, last) then
    out[#out + 1] = -2
  elseif kind == 'h' then
    redis.call('LPUSH', KEYS[3], entry)
    holdout_added = true
    out[#out + 1] = -3
    last = id
  else
    seen = seen + 1
    local slot = -1
    if seen <= capacity then
      slot = seen - 1
    else
      local j = math.floor(u * seen)
      if j < capacity then slot = j end
    end
    if slot >= 0 then redis.call('HSET', KEYS[1], slot, entry) end
    out[#out + 1] = slot
    last = id
  end
end
if holdout_added then redis.call('LTRIM', KEYS[3], 0, holdout_capacity - 1) end
redis.call('HSET', KEYS[2], 'seen', seen, 'last_id', last)
return out
