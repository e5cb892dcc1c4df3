-- The later check of a finalized batch's transaction. 'confirmed': seen in a block, the batch
-- leaves payments:confirming. 'missing': neither in the mempool nor in a block this round;
-- after `limit` such rounds in a row it is flagged dropped (payments:dropped), never re-paid.
-- 'pending': in the mempool, the missing count restarts.
-- ARGV: prefix, fence token, batch id, now ms, outcome, limit, block height (confirmed).
-- Returns 1 when the batch was confirmed or flagged by this call, else 0.
local p, token, id, now, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local key = p .. ':payments:batch:' .. id
if redis.call('ZSCORE', p .. ':payments:confirming', id) == false then
  return 0
end
if outcome == 'confirmed' then
  redis.call('HSET', key, 'confirmedHeight', ARGV[7], 'updated', now)
  redis.call('HDEL', key, 'missingRounds')
  redis.call('ZREM', p .. ':payments:confirming', id)
  return 1
end
if outcome == 'pending' then
  redis.call('HDEL', key, 'missingRounds')
  return 0
end
local missing = redis.call('HINCRBY', key, 'missingRounds', 1)
if missing < tonumber(ARGV[6]) then
  return 0
end
redis.call('HSET', key, 'dropped', now, 'updated', now)
redis.call('ZREM', p .. ':payments:confirming', id)
redis.call('ZADD', p .. ':payments:dropped', now, id)
return 1
