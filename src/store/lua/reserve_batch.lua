-- Journals a payment batch and moves its amounts from balance to pending, all or nothing.
-- `intent` = 1 marks a batch that records `preparing` before the wallet is asked to prepare
-- (journals of earlier versions lack it: their `reserved` batches may have been prepared).
-- ARGV: prefix, fence token, batch id, now ms, destinations JSON, total sent, tx fee, n,
--       then n pairs: address, amount reserved (sent + fee charged), then Σ fees charged;
--       all decimal strings.
-- Returns 1, or 0 if some balance no longer covers its payout (nothing changed).
local p, token, id = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local n = tonumber(ARGV[8])
for i = 0, n - 1 do
  local address, need = ARGV[9 + 2 * i], ARGV[10 + 2 * i]
  local balance = tonumber(redis.call('HGET', p .. ':balances:' .. address, 'balance') or '0')
  if balance < tonumber(need) then
    return 0
  end
end
for i = 0, n - 1 do
  local address, need = ARGV[9 + 2 * i], ARGV[10 + 2 * i]
  local b = p .. ':balances:' .. address
  redis.call('HINCRBY', b, 'balance', '-' .. need)
  redis.call('HINCRBY', b, 'pending', need)
end
redis.call('HSET', p .. ':payments:batch:' .. id, 'state', 'reserved', 'destinations', ARGV[5],
  'total', ARGV[6], 'txFee', ARGV[7], 'fees', ARGV[9 + 2 * n], 'created', ARGV[4], 'updated', ARGV[4],
  'intent', '1')
redis.call('ZADD', p .. ':payments:journal', ARGV[4], id)
return 1
