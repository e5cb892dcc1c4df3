-- A batch's transaction was not sent: pending → balance, journal entry removed. Only from
-- `reserved` or `prepared`; idempotent. ARGV: prefix, fence token, batch id, now ms, reason.
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local key = p .. ':payments:batch:' .. id
local state = redis.call('HGET', key, 'state')
if state ~= 'reserved' and state ~= 'prepared' then
  return 0
end
for _, d in ipairs(cjson.decode(redis.call('HGET', key, 'destinations'))) do
  local b = p .. ':balances:' .. d.address
  redis.call('HINCRBY', b, 'pending', '-' .. d.reserved)
  redis.call('HINCRBY', b, 'balance', d.reserved)
end
redis.call('HSET', key, 'state', 'released', 'updated', ARGV[4], 'error', ARGV[5])
redis.call('ZREM', p .. ':payments:journal', id)
return 1
