-- Remove the learner lease only if `owner` still holds it (a holder known to be dead): the
-- next lease_acquire then hands out a new fencing token, so the dead holder stays fenced.
-- KEYS: lease   ARGV: owner   Returns 1 if removed, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
