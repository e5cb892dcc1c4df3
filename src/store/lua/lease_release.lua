-- Gives the lease up if `token` holds it. ARGV: prefix, token.
local p = ARGV[1]
if redis.call('GET', p .. ':leader') == ARGV[2] then
  redis.call('DEL', p .. ':leader')
  return 1
end
return 0
