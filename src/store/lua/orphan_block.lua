-- Marks a pending block orphaned (never credited). ARGV: prefix, fence token, hash, height, now,
-- how long (s) its window snapshot is kept.
local p, token, hash, height, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', p .. ':leader') ~= token then
  return redis.error_reply('FENCED: not the leader')
end
local info = p .. ':blocks:info:' .. hash
if redis.call('HGET', info, 'status') ~= 'pending' then
  return 0
end
redis.call('HSET', info, 'status', 'orphaned', 'orphanedAt', now)
redis.call('EXPIRE', p .. ':blocks:window:' .. hash, tonumber(ARGV[6]))
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p .. ':blocks:candidates', height, height)) do
  if string.find(m, ':' .. hash .. ':', 1, true) then
    redis.call('ZREM', p .. ':blocks:candidates', m)
    redis.call('ZADD', p .. ':blocks:matured', height, m .. ':1')
  end
end
redis.call('HINCRBY', p .. ':totals', 'blocksOrphaned', 1)
return 1
