-- Add golden items that are not in the set yet (a retry of a request whose answer was lost
-- adds nothing twice). Atomic: all of a request's new items or, refused under OOM, none.
-- KEYS: golden list
-- ARGV: encoded items
-- Returns {added, size}
local added = 0
for _, item in ipairs(ARGV) do
  if not redis.call('LPOS', KEYS[1], item) then
    redis.call('RPUSH', KEYS[1], item)
    added = added + 1
  end
end
return {added, redis.call('LLEN', KEYS[1])}
