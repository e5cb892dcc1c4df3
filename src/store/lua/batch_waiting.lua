-- A batch without a transaction hash (`preparing`, or `held` from it) kept because the wallet's
-- locked balance may hold the inputs of a transaction prepared for it: records why, for
-- `payments list`, `/admin_payments` and `audit`. Changes no amount and not `updated` (the
-- batch's settle clock).
-- ARGV: prefix, fence token, batch id, why. Returns 1, or 0 if not in those states or hashed.
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local key = p .. ':payments:batch:' .. id
local state = redis.call('HGET', key, 'state')
if (state ~= 'preparing' and state ~= 'held') or redis.call('HEXISTS', key, 'txHash') == 1 then
  return 0
end
redis.call('HSET', key, 'waiting', 'inputs', 'error', ARGV[4])
return 1
