-- Quarantines an address the wallet cannot pay: its balance is kept, it is never batched.
-- ARGV: prefix, fence token, address, reason, now ms. Returns 1, or 0 if already quarantined.
local p, token = ARGV[1], ARGV[2]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local done = redis.call('HSETNX', p .. ':payments:quarantine', ARGV[3], ARGV[4])
if done == 1 then
  redis.call('HSET', p .. ':payments:quarantineSince', ARGV[3], ARGV[5])
end
return done
