-- Moves the old pool's balance/paid fields of one address into balances:<address> (once:
-- the fields are removed from the old hash), and drops the old hash's TTL so the old pool's
-- 15-day expiry cannot delete anything any more; totals.imported sums what was moved.
-- ARGV: prefix, address, why the address is invalid ('' when it is valid): an invalid one is
-- quarantined (kept, never paid) in payments:quarantine.
-- Returns the balance moved (decimal string, or 0).
local p, address = ARGV[1], ARGV[2]
local old = p .. ':workers:' .. address
local balance_text = redis.call('HGET', old, 'balance') or '0'
local paid_text = redis.call('HGET', old, 'paid') or '0'
local balance, paid = tonumber(balance_text), tonumber(paid_text)
local level = redis.call('HGET', old, 'minPayoutLevel')
redis.call('PERSIST', old)
if balance == 0 and paid == 0 and not level then
  return 0
end
local b = p .. ':balances:' .. address
redis.call('HINCRBY', b, 'balance', balance_text)
redis.call('HINCRBY', b, 'paid', paid_text)
redis.call('HINCRBY', b, 'credited', string.format('%d', balance + paid))
-- Credited by the old pool, not by a block here: the audit adds it to the blocks' credits.
redis.call('HINCRBY', p .. ':totals', 'imported', string.format('%d', balance + paid))
if level then
  redis.call('HSETNX', b, 'minPayoutLevel', level)
end
redis.call('HDEL', old, 'balance', 'paid', 'minPayoutLevel')
redis.call('SADD', p .. ':balances:index', address)
if ARGV[3] ~= '' then
  redis.call('HSETNX', p .. ':payments:quarantine', address, 'imported from the old pool: ' .. ARGV[3])
end
return balance_text
