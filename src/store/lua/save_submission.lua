-- Records a found block for (re)submission before it goes to the daemon, at most once per hash.
-- ARGV[1] prefix, [2] hash, [3] height, [4] unix ms, then field/value pairs of the record.
-- Returns 1 if recorded now, 0 if the hash was already known.
local p, hash, height, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. ':blocks:submit:' .. hash
if redis.call('EXISTS', key) == 1 then
  return 0
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', key, 'status', 'pending', 'updated', now_ms)
redis.call('ZADD', p .. ':blocks:submitting', height, hash)
return 1
