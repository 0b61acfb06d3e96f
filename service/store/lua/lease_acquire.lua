-- Take the learner lease if nobody holds it; a new fencing token comes with it.
-- KEYS: lease, fence   ARGV: owner, ttl_ms   Returns the token or false.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
