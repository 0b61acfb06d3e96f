-- Extend the lease only while this owner still holds it under the same fencing token.
-- KEYS: lease, fence   ARGV: owner, token, ttl_ms   Returns 1 or 0.
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
