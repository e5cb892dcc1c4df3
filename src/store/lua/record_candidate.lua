-- Records a block candidate right after the flush that contains its share (same EVAL call
-- order from the ledger), at most once per block hash.
-- ARGV[1] prefix, [2] type (prop|solo), [3] finder login, [4] finder worker, [5] block hash,
--     [6] height, [7] unix s, [8] unix ms, [9] network difficulty, [10] reward (pool output),
--     [11] PPLNS window size N (difficulty units), [12] finder job difficulty of the block share.
-- Returns {window total, round shares, round score} or 0 if the hash was already recorded.
local p, typ, login, worker, hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local height, now_s, now_ms, netdiff, reward = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local n = tonumber(ARGV[11])
local info = p .. ':blocks:info:' .. hash
if redis.call('EXISTS', info) == 1 then
  return 0
end
redis.call('HSET', p .. ':stats', 'lastBlockFound' .. typ, now_ms)

-- Close the finder type's round only (the other type's round goes on).
local function close_round(kind)
  local cur = p .. ':' .. kind .. ':' .. typ .. ':roundCurrent'
  local dst = p .. ':' .. kind .. ':' .. typ .. ':round' .. height
  local all = redis.call('HGETALL', cur)
  for i = 1, #all, 2 do
    redis.call('HINCRBY', dst, all[i], all[i + 1])
  end
  redis.call('DEL', cur)
  return dst
end
local scores_key = close_round('scores')
local shares_key = close_round('shares_actual')
local total_score, total_shares, finder_score = 0, 0, 0
local scores = redis.call('HGETALL', scores_key)
for i = 1, #scores, 2 do
  total_score = total_score + tonumber(scores[i + 1])
  if scores[i] == login then finder_score = tonumber(scores[i + 1]) end
end
local shares = redis.call('HGETALL', shares_key)
for i = 1, #shares, 2 do
  total_shares = total_shares + tonumber(shares[i + 1])
end

-- PPLNS snapshot: the newest N difficulty units of prop shares, ending with this block's share
-- (already flushed); the oldest record counts partially so the window is exactly N when the
-- list holds enough. Solo blocks pay the finder alone.
local window = p .. ':blocks:window:' .. hash
local window_total = 0
-- The oldest record counted, when only part of it fits: address, its difficulty, the part counted.
local partial = nil
if typ == 'prop' then
  local wl = p .. ':pplns:window'
  local acc = {}
  local order = {}
  local start = 0
  while window_total < n do
    local chunk = redis.call('LRANGE', wl, start, start + 999)
    if #chunk == 0 then break end
    for _, rec in ipairs(chunk) do
      local sep = string.find(rec, ':', 1, true)
      local score = tonumber(string.sub(rec, 1, sep - 1))
      local who = string.sub(rec, sep + 1)
      local take = math.min(score, n - window_total)
      if take < score then
        partial = {who, string.format('%d', score), string.format('%d', take)}
      end
      if acc[who] == nil then
        acc[who] = 0
        order[#order + 1] = who
      end
      acc[who] = acc[who] + take
      window_total = window_total + take
      if window_total >= n then break end
    end
    start = start + 1000
  end
  for _, who in ipairs(order) do
    redis.call('HSET', window, who, string.format('%d', acc[who]))
  end
else
  redis.call('HSET', window, login, ARGV[12])
  window_total = tonumber(ARGV[12])
end

local participants = {}
local w = redis.call('HGETALL', window)
for i = 1, #w, 2 do
  participants[#participants + 1] = w[i] .. ':' .. w[i + 1]
end
redis.call('HSET', p .. ':blocks:participants', height, table.concat(participants, ','))
redis.call('ZADD', p .. ':blocks:candidates', height,
  string.format('%s:%s:%s:%s:%s:%d:%d:%d', typ, login, hash, now_s, netdiff, total_shares, total_score, finder_score))
redis.call('HSET', info,
  'height', height, 'hash', hash, 'type', typ, 'login', login, 'worker', worker,
  'timestamp', now_s, 'difficulty', netdiff, 'reward', reward, 'shares', string.format('%d', total_shares),
  'score', string.format('%d', total_score), 'finderScore', string.format('%d', finder_score),
  'windowSize', ARGV[11], 'windowTotal', string.format('%d', window_total),
  'status', 'pending')
if partial then
  redis.call('HSET', info, 'partialAddress', partial[1], 'partialRecord', partial[2], 'partialCounted', partial[3])
end
return {window_total, total_shares, total_score}
