-- Make an existing, non-rejected version current with a higher epoch.
-- KEYS: current, statuses, activated set, events, target version key
-- ARGV: version
-- Returns {"ok", epoch} | {"missing"} | {"rejected"}
local v = ARGV[1]
local status = redis.call('HGET', KEYS[2], v)
if not status or redis.call('HEXISTS', KEYS[5], 'weights') == 0 then return {'missing'} end
if status == 'rejected' then return {'rejected'} end
local prev = redis.call('HGET', KEYS[1], 'version')
if prev == v then return {'ok', tonumber(redis.call('HGET', KEYS[1], 'epoch'))} end
if prev then redis.call('HSET', KEYS[2], prev, 'archived') end
redis.call('HSET', KEYS[2], v, 'active')
redis.call('SADD', KEYS[3], v)
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'version', v)
redis.call('PUBLISH', KEYS[4], v .. ':' .. epoch)
return {'ok', epoch}
