-- Writes one ledger flush atomically and at most once.
-- KEYS: none (all keys derive from the prefix, single-instance Redis).
-- ARGV[1] prefix, [2] flush id, [3] unix s, [4] unix ms, [5] instance tag,
--     [6] worker-stats TTL s, [7] this node's template height, [8] the PPLNS units a window at
--     its network difficulty may need (0 = no template), [9] heights the needs are remembered,
--     [10] record count n, then n records of 4 fields: login, worker, type (prop|solo), difficulty sum.
-- Returns 1 if written, 0 if this flush id was already written (a retry after a lost reply).
-- Numbers are written with string.format('%d'): Lua's default number-to-string conversion
-- (%.14g) would turn large integers into exponent notation.
local p = ARGV[1]
if redis.call('SET', p .. ':ledger:flushes:' .. ARGV[2], '1', 'NX', 'EX', 86400) == false then
  return 0
end
local now_s, now_ms, inst = ARGV[3], ARGV[4], ARGV[5]
local ttl = tonumber(ARGV[6])
local n = tonumber(ARGV[10])
local per_login = {}
local window_add = {}
local window_order = {}
for i = 0, n - 1 do
  local b = 11 + i * 4
  local login, worker, typ, diff_text = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local diff = tonumber(diff_text)
  redis.call('HINCRBY', p .. ':scores:' .. typ .. ':roundCurrent', login, diff_text)
  redis.call('HINCRBY', p .. ':shares_actual:' .. typ .. ':roundCurrent', login, diff_text)
  redis.call('ZADD', p .. ':hashrate', now_s, diff_text .. ':' .. login .. '~' .. worker .. ':' .. now_ms .. ':' .. typ .. ':' .. inst)
  local lk = login .. '\0' .. typ
  per_login[lk] = (per_login[lk] or 0) + diff
  local wk = p .. ':unique_workers:' .. login .. '~' .. worker
  redis.call('HINCRBY', wk, 'hashes', diff_text)
  redis.call('HSET', wk, 'lastShare', now_s, 'rewardType', typ)
  redis.call('EXPIRE', wk, ttl)
  if typ == 'prop' then
    if window_add[login] == nil then
      window_order[#window_order + 1] = login
      window_add[login] = 0
    end
    window_add[login] = window_add[login] + diff
  end
end
for lk, diff in pairs(per_login) do
  local sep = string.find(lk, '\0', 1, true)
  local login, typ = string.sub(lk, 1, sep - 1), string.sub(lk, sep + 1)
  local d = string.format('%d', diff)
  redis.call('ZADD', p .. ':hashrate', now_s, d .. ':' .. login .. ':' .. now_ms .. ':' .. typ .. ':' .. inst)
  redis.call('HINCRBY', p .. ':workers:' .. login, 'hashes', d)
  redis.call('HSET', p .. ':workers:' .. login, 'lastShare', now_s)
end
-- PPLNS window: newest records at the head, one per login per flush, trimmed from the tail
-- while what remains still covers `keep` difficulty units: the largest need any node reported
-- within the last `span` heights (pplns:needs, score = height, member = height:need). A node
-- whose daemon lags, or a difficulty drop, never trims what a window at the recent high needs.
local needs = p .. ':pplns:needs'
if tonumber(ARGV[8]) > 0 then
  redis.call('ZADD', needs, ARGV[7], ARGV[7] .. ':' .. ARGV[8])
end
local keep = 0
local top = redis.call('ZREVRANGE', needs, 0, 0, 'WITHSCORES')
if #top > 0 then
  redis.call('ZREMRANGEBYSCORE', needs, '-inf', '(' .. string.format('%d', tonumber(top[2]) - tonumber(ARGV[9])))
  for _, member in ipairs(redis.call('ZRANGE', needs, 0, -1)) do
    local need = tonumber(string.sub(member, string.find(member, ':', 1, true) + 1))
    if need > keep then keep = need end
  end
end
local wl, wt = p .. ':pplns:window', p .. ':pplns:total'
local total = tonumber(redis.call('GET', wt) or '0')
for _, login in ipairs(window_order) do
  redis.call('LPUSH', wl, string.format('%d', window_add[login]) .. ':' .. login)
  total = total + window_add[login]
end
while keep > 0 do
  local tail = redis.call('LINDEX', wl, -1)
  if not tail then break end
  local score = tonumber(string.sub(tail, 1, string.find(tail, ':', 1, true) - 1))
  if total - score < keep then break end
  redis.call('RPOP', wl)
  total = total - score
end
redis.call('SET', wt, string.format('%d', total))
return 1
