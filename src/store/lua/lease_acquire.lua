-- Takes the leader lease if nobody holds it. ARGV: prefix, instance, ttl ms.
-- Returns the token "<instance>:<epoch>" or false.
local p = ARGV[1]
if redis.call('EXISTS', p .. ':leader') == 1 then
  return false
end
local epoch = redis.call('INCR', p .. ':leader:epoch')
local token = ARGV[2] .. ':' .. epoch
redis.call('SET', p .. ':leader', token, 'PX', ARGV[3])
return token
