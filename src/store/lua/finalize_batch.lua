-- A batch's transaction was sent: pending → paid (+ fees charged), payment records in the old
-- formats, journal entry removed; the batch waits in payments:confirming until its transaction
-- is seen in a block. Only from `prepared`, `unknown`, `held` or `sent`; idempotent.
-- ARGV: prefix, fence token ('' = the operator, held batches only), batch id, now (unix s),
-- now ms, how it was decided.
local p, token, id, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
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
for _, s in ipairs({'prepared', 'unknown', 'held', 'sent'}) do
  allowed = allowed or state == s
end
if not allowed then
  return 0
end
local tx = redis.call('HGET', key, 'txHash')
local tx_fee = redis.call('HGET', key, 'txFee')
local total = redis.call('HGET', key, 'total')
-- Amounts are decimal strings in the JSON and are applied as given.
local dests = cjson.decode(redis.call('HGET', key, 'destinations'))
for _, d in ipairs(dests) do
  local b = p .. ':balances:' .. d.address
  redis.call('HINCRBY', b, 'pending', '-' .. d.reserved)
  redis.call('HINCRBY', b, 'paid', d.amount)
  redis.call('HINCRBY', b, 'fees', d.fee)
  redis.call('ZADD', p .. ':payments:' .. d.address, now, tx .. ':' .. d.amount .. ':' .. d.fee .. ':0')
end
redis.call('ZADD', p .. ':payments:all', now,
  tx .. ':' .. total .. ':' .. tx_fee .. ':0:' .. #dests .. ':' .. dests[1].address)
redis.call('HINCRBY', p .. ':totals', 'paid', total)
redis.call('HINCRBY', p .. ':totals', 'fees', redis.call('HGET', key, 'fees'))
redis.call('HINCRBY', p .. ':totals', 'txFees', tx_fee)
redis.call('HSET', key, 'state', 'finalized', 'updated', ARGV[5], 'decided', ARGV[6])
redis.call('ZREM', p .. ':payments:journal', id)
redis.call('ZADD', p .. ':payments:confirming', ARGV[5], id)
return 1
