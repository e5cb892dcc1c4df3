-- Extends the lease if `token` still holds it. ARGV: prefix, token, ttl ms. Returns 1 or 0.
local p = ARGV[1]
if redis.call('GET', p .. ':leader') == ARGV[2] then
  redis.call('PEXPIRE', p .. ':leader', ARGV[3])
  return 1
end
return 0
