-- Credits a confirmed block exactly once (guarded by its status) and only for the lease holder.
-- ARGV: prefix, fence token, block hash, height, now (unix s), pool fee, finder reward, dust,
--       total credited, n, then n pairs: address, amount (decimal strings, applied as given),
--       then the terms the split used: fee (bps), finder reward (bps), and how long (s) the
--       block's payout record (window and credits) is kept.
-- Returns 1 if credited now, 0 if the block was not pending (already credited or orphaned).
local p, token, hash, height, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local info = p .. ':blocks:info:' .. hash
if redis.call('HGET', info, 'status') ~= 'pending' then
  return 0
end
local total = ARGV[9]
local n = tonumber(ARGV[10])
for i = 0, n - 1 do
  local address, amount = ARGV[11 + 2 * i], ARGV[12 + 2 * i]
  local b = p .. ':balances:' .. address
  redis.call('HINCRBY', b, 'balance', amount)
  redis.call('HINCRBY', b, 'credited', amount)
  redis.call('SADD', p .. ':balances:index', address)
  redis.call('HSET', p .. ':blocks:credits:' .. hash, address, amount)
end
local reward = redis.call('HGET', info, 'reward')
local terms = 11 + 2 * n
local keep = tonumber(ARGV[terms + 2])
redis.call('HSET', info, 'status', 'confirmed', 'credited', total, 'poolFee', ARGV[6],
  'finderReward', ARGV[7], 'dust', ARGV[8], 'confirmedAt', now,
  'feeBps', ARGV[terms], 'finderBps', ARGV[terms + 1], 'payoutExpiresAt', string.format('%d', tonumber(now) + keep))
-- The payout record is bounded: the window and the credits expire, the totals stay.
redis.call('EXPIRE', p .. ':blocks:window:' .. hash, keep)
redis.call('EXPIRE', p .. ':blocks:credits:' .. hash, keep)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p .. ':blocks:candidates', height, height)) do
  if string.find(m, ':' .. hash .. ':', 1, true) then
    redis.call('ZREM', p .. ':blocks:candidates', m)
    redis.call('ZADD', p .. ':blocks:matured', height, m .. ':0:' .. reward)
  end
end
local t = p .. ':totals'
redis.call('HINCRBY', t, 'credited', total)
redis.call('HINCRBY', t, 'poolFees', ARGV[6])
redis.call('HINCRBY', t, 'dust', ARGV[8])
redis.call('HINCRBY', t, 'blocksConfirmed', 1)
return 1
