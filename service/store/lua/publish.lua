-- Publish (or record as rejected) one version and commit the learner's stream position, in
-- one atomic step guarded by the learner's fencing token.
-- KEYS: fence, version key, versions zset, current, statuses, activated set, events, cursor,
--       next version counter (advanced here, so a crash before publishing leaves no gap)
-- ARGV: token, version, meta json, weights, state, status, last_stream_id, samples_seen,
--       parent ("" = unchecked): the version the candidate was trained from
-- Returns the new epoch; 0 when the version was rejected; -1 when `current` is no longer the
-- parent (an operator activated another version meanwhile): the version is kept, archived,
-- and the operator's choice stands.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local v = ARGV[2]
if tonumber(redis.call('GET', KEYS[9]) or '0') < tonumber(v) then
  redis.call('SET', KEYS[9], v)
end
redis.call('HSET', KEYS[2], 'meta', ARGV[3], 'weights', ARGV[4], 'state', ARGV[5])
redis.call('ZADD', KEYS[3], v, v)
redis.call('HSET', KEYS[8], 'last_stream_id', ARGV[7], 'samples_seen', ARGV[8])
if ARGV[6] ~= 'active' then
  redis.call('HSET', KEYS[5], v, ARGV[6])
  return 0
end
local prev = redis.call('HGET', KEYS[4], 'version')
if ARGV[9] and ARGV[9] ~= '' and prev ~= ARGV[9] then
  redis.call('HSET', KEYS[5], v, 'archived')
  return -1
end
if prev then redis.call('HSET', KEYS[5], prev, 'archived') end
redis.call('HSET', KEYS[5], v, 'active')
-- Not added to the activated set (KEYS[6], kept by retention): that set holds the versions
-- an operator activated; a published version is kept while it is among the newest
-- MNEMO_KEEP_VERSIONS or current (prune.lua).
local epoch = redis.call('HINCRBY', KEYS[4], 'epoch', 1)
redis.call('HSET', KEYS[4], 'version', v)
redis.call('PUBLISH', KEYS[7], v .. ':' .. epoch)
return epoch
