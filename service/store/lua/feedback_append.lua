-- Validate, dedupe and append one whole feedback batch atomically (all-or-nothing).
-- KEYS: stream, seen ids, vocab hash, vocab order list, counters, learner stats
-- ARGV: max_lag, max_classes, n_items, now_ms, items: one blob holding per item five
--       little-endian uint32 lengths (id, label, x, tag, version) then those five strings.
--       (One argument, not five per item: packing 500 arguments cost the API more than
--       everything else a 100-item request does.)
-- Returns {"ok", accepted, duplicates} | {"shed", lag} | {"labels", item_index, label}
local max_lag = tonumber(ARGV[1])
local max_classes = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now = ARGV[4]
local blob = ARGV[5]

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

local accepted_total = tonumber(redis.call('HGET', KEYS[5], 'accepted') or '0')
local processed = tonumber(redis.call('HGET', KEYS[6], 'processed') or '0')
-- Items purged before the learner read them will never be processed.
local purged = tonumber(redis.call('HGET', KEYS[5], 'purged') or '0')
local lag = accepted_total - purged - processed
if lag + n > max_lag then
  return {'shed', lag}
end

-- New labels: refuse the whole batch before writing anything if the vocabulary would overflow.
local size = tonumber(redis.call('HLEN', KEYS[3]))
local new_labels = {}
local order = {}
for i = 0, n - 1 do
  local label = labels[i]
  if new_labels[label] == nil and redis.call('HEXISTS', KEYS[3], label) == 0 then
    if size + #order + 1 > max_classes then
      return {'labels', i, label}
    end
    new_labels[label] = true
    order[#order + 1] = label
  end
end
for _, label in ipairs(order) do
  redis.call('HSET', KEYS[3], label, size)
  redis.call('RPUSH', KEYS[4], label)
  size = size + 1
end

local accepted, duplicates = 0, 0
for i = 0, n - 1 do
  local id = ids[i]
  local fresh = true
  if id ~= '' then
    fresh = redis.call('HSETNX', KEYS[2], id, '') == 1
  end
  if fresh then
    local sid = redis.call('XADD', KEYS[1], '*', 'x', xs[i], 'y', labels[i],
      'tag', tags[i], 'v', versions[i], 'id', id, 't', now)
    if id ~= '' then
      redis.call('HSET', KEYS[2], id, sid)
    end
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
if accepted > 0 then redis.call('HINCRBY', KEYS[5], 'accepted', accepted) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[5], 'duplicates', duplicates) end
return {'ok', accepted, duplicates}
