-- Ends a block submission: the daemon accepted or rejected it, or another block took its height.
-- ARGV[1] prefix, [2] hash, [3] status, [4] unix ms, [5] detail, [6] TTL seconds of the record.
-- Returns 1 if resolved now, 0 if it was already resolved or unknown.
local p, hash, status, now_ms, detail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = p .. ':blocks:submit:' .. hash
if redis.call('HGET', key, 'status') ~= 'pending' then
  redis.call('ZREM', p .. ':blocks:submitting', hash)
  return 0
end
redis.call('HSET', key, 'status', status, 'updated', now_ms, 'detail', detail)
redis.call('ZREM', p .. ':blocks:submitting', hash)
redis.call('EXPIRE', key, tonumber(ARGV[6]))
return 1
