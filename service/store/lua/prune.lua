-- Retention: delete the weights and learner-state blobs of old versions, keeping their meta
-- (so the registry still lists them), guarded by the learner's fencing token.
-- KEYS: fence, versions zset, activated set, current, then one version key per candidate
-- ARGV: token, keep, then the candidates' version numbers (in the order of KEYS[5..])
-- A candidate loses its blobs only if, at this moment, it is outside the newest `keep`
-- versions, was never activated by an operator, and is not current. Everything is re-checked
-- here, so candidates computed from an older read of the registry are safe.
-- Returns {pruned, held}: the versions whose blobs this call deleted, and the candidates kept
-- for now only (current, or back inside the window) that a later call must look at again.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED this learner no longer holds the lease')
end
local keep = tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[4], 'version')
local pruned, held = {}, {}
for i = 5, #KEYS do
  local v = ARGV[i - 2]
  local rank = redis.call('ZREVRANK', KEYS[2], v)
  if rank and redis.call('SISMEMBER', KEYS[3], v) == 0 then
    if rank < keep or v == current then
      held[#held + 1] = v
    elseif redis.call('HDEL', KEYS[i], 'weights', 'state') > 0 then
      pruned[#pruned + 1] = v
    end
  end
end
return {pruned, held}
