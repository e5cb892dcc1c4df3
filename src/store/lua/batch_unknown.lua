-- A batch whose send had no definitive outcome: `prepared` or `unknown` → `unknown`, its
-- amounts still reserved (pending). Counts the rounds in a row in which the wallet had neither
-- the transaction (unconfirmed, then confirmed) nor its prepared hash.
-- ARGV: prefix, fence token, batch id, now ms, what happened, '1' if this round found it absent
-- (else the count is kept: an unreachable wallet proves nothing).
-- Returns the number of absent rounds, or -1 if the batch was in neither state.
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local key = p .. ':payments:batch:' .. id
local state = redis.call('HGET', key, 'state')
if state ~= 'prepared' and state ~= 'unknown' then
  return -1
end
redis.call('HSET', key, 'state', 'unknown', 'updated', ARGV[4], 'error', ARGV[5])
if ARGV[6] == '1' then
  return redis.call('HINCRBY', key, 'absentRounds', 1)
end
return tonumber(redis.call('HGET', key, 'absentRounds') or '0')
