-- A batch's transaction was not sent: pending → balance, journal entry removed. Only from
-- `reserved`, `preparing`, `prepared`, `unknown` or `held`; idempotent.
-- ARGV: prefix, fence token ('' = the operator, held batches only), batch id, now ms, reason.
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':payments:batch:' .. id
local state = redis.call('HGET', key, 'state')
if token == '' then
  -- The operator (`pastella-pool payments resolve`) may settle a held batch, and only that.
  if state ~= 'held' then
    return 0
  end
elseif redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local allowed = false
for _, s in ipairs({'reserved', 'preparing', 'prepared', 'unknown', 'held'}) do
  allowed = allowed or state == s
end
if not allowed then
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
