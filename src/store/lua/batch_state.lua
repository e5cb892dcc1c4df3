-- Moves a batch from one state to the next, recording fields.
-- ARGV: prefix, fence token, batch id, expected state, new state, now ms, then field/value pairs.
-- Returns 1, or 0 if the batch was not in the expected state.
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local key = p .. ':payments:batch:' .. id
if redis.call('HGET', key, 'state') ~= ARGV[4] then
  return 0
end
redis.call('HSET', key, 'state', ARGV[5], 'updated', ARGV[6])
for i = 7, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
return 1
