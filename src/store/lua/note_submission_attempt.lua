-- Notes a failed attempt on a pending block submission (operators see how long it has waited).
-- ARGV[1] prefix, [2] hash, [3] attempts so far, [4] unix ms, [5] the transient error.
-- Returns 1 if noted, 0 if the submission is not pending (resolved or unknown).
local p, hash = ARGV[1], ARGV[2]
local key = p .. ':blocks:submit:' .. hash
if redis.call('HGET', key, 'status') ~= 'pending' then
  return 0
end
redis.call('HSET', key, 'attempts', ARGV[3], 'updated', ARGV[4], 'detail', ARGV[5])
return 1
