-- An unresolved batch too old to keep retrying: `unknown`, `prepared` or `preparing` → `held`,
-- amounts still reserved, for the operator (`pastella-pool payments resolve`). Stays in the
-- journal.
-- ARGV: prefix, fence token, batch id, now ms, why. Returns 1, or 0 if not in those states.
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local key = p .. ':payments:batch:' .. id
local state = redis.call('HGET', key, 'state')
if state ~= 'unknown' and state ~= 'prepared' and state ~= 'preparing' then
  return 0
end
redis.call('HSET', key, 'state', 'held', 'updated', ARGV[4], 'held', ARGV[5])
return 1
