-- Validate, dedupe and append one whole feedback batch atomically (all-or-nothing).
-- KEYS: stream, seen ids of the previous, current and next window and the legacy unbounded
--       hash (looked up; new ids go to the current window's), vocab hash, vocab order list,
--       counters, learner stats
-- ARGV: max_lag, max_classes, n_items, now_ms, items: one blob holding per item five
--       little-endian uint32 lengths (id, label, x, tag, version) then those five strings.
--       (One argument, not five per item: packing 500 arguments cost the API more than
--       everything else a 100-item request does.), seen_ttl_seconds (for the current window)
-- Returns {"ok", accepted, duplicates} | {"shed", lag} | {"labels", item_index, label}
local max_lag = tonumber(ARGV[1])
local max_classes = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now = ARGV[4]
local blob = ARGV[5]
local seen_ttl = tonumber(ARGV[6])
local STREAM, PREV, SEEN, NEXT, LEGACY = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local VOCAB, ORDER, COUNTERS, LEARNER = KEYS[6], KEYS[7], KEYS[8], KEYS[9]

local ids, labels, xs, tags, versions = {}, {}, {}, {}, {}
local pos = 1
for i = 0, n - 1 do
  local li, ll, lx, lt, lv, at = struct.unpack('<I4I4I4I4I4', blob, pos)
  ids[i] = string.sub(blob, at, at + li - 1); at = at + li
  labels[i] = string.sub(blob, at, at + ll - 1); at = at + ll
  xs[i] = string.sub(blob, at, at + lx - 1); at = at + lx
  tags[i] = string.sub(blob, at, at + lt - 1); at = at + lt
  versions[i] = string.sub(blob, at, at + lv - 1); pos = at + lv
end

local accepted_total = tonumber(redis.call('HGET', COUNTERS, 'accepted') or '0')
local processed = tonumber(redis.call('HGET', LEARNER, 'processed') or '0')
-- Items purged before the learner read them will never be processed.
local purged = tonumber(redis.call('HGET', COUNTERS, 'purged') or '0')
local lag = accepted_total - purged - processed
if lag + n > max_lag then
  return {'shed', lag}
end

-- New labels: refuse the whole batch before writing anything if the vocabulary would overflow.
local size = tonumber(redis.call('HLEN', VOCAB))
local new_labels = {}
local order = {}
for i = 0, n - 1 do
  local label = labels[i]
  if new_labels[label] == nil and redis.call('HEXISTS', VOCAB, label) == 0 then
    if size + #order + 1 > max_classes then
      return {'labels', i, label}
    end
    new_labels[label] = true
    order[#order + 1] = label
  end
end
for _, label in ipairs(order) do
  redis.call('HSET', VOCAB, label, size)
  redis.call('RPUSH', ORDER, label)
  size = size + 1
end

local legacy = redis.call('EXISTS', LEGACY) == 1
if legacy and redis.call('TTL', LEGACY) == -1 then
  redis.call('EXPIRE', LEGACY, seen_ttl)  -- the unbounded hash of earlier versions ages out
end
local function seen_before(id)
  return redis.call('HEXISTS', SEEN, id) == 1 or redis.call('HEXISTS', PREV, id) == 1
    or redis.call('HEXISTS', NEXT, id) == 1 or (legacy and redis.call('HEXISTS', LEGACY, id) == 1)
end

local accepted, duplicates, remembered = 0, 0, false
for i = 0, n - 1 do
  local id = ids[i]
  if id ~= '' and seen_before(id) then
    duplicates = duplicates + 1
  else
    local sid = redis.call('XADD', STREAM, '*', 'x', xs[i], 'y', labels[i],
      'tag', tags[i], 'v', versions[i], 'id', id, 't', now)
    if id ~= '' then
      redis.call('HSET', SEEN, id, sid)
      remembered = true
    end
    accepted = accepted + 1
  end
end
if remembered and redis.call('TTL', SEEN) == -1 then redis.call('EXPIRE', SEEN, seen_ttl) end
if accepted > 0 then redis.call('HINCRBY', COUNTERS, 'accepted', accepted) end
if duplicates > 0 then redis.call('HINCRBY', COUNTERS, 'duplicates', duplicates) end
return {'ok', accepted, duplicates}
