-- Writes one ledger flush atomically and at most once.
-- KEYS: none (all keys derive from the prefix, single-instance Redis).
-- ARGV[1] prefix, [2] flush id, [3] unix s, [4] unix ms, [5] instance tag,
--     [6] worker-stats TTL s, [7] PPLNS keep (difficulty units kept in the window list),
--     [8] record count n, then n records of 4 fields: login, worker, type (prop|solo), difficulty sum.
-- Returns 1 if written, 0 if this flush id was already written (a retry after a lost reply).
-- Numbers are written with string.format('%d'): Lua's default number-to-string conversion
-- (%.14g) would turn large integers into exponent notation.
local p = ARGV[1]
if redis.call('SET', p .. ':ledger:flushes:' .. ARGV[2], '1', 'NX', 'EX', 86400) == false then
  return 0
end
local now_s, now_ms, inst = ARGV[3], ARGV[4], ARGV[5]
local ttl = tonumber(ARGV[6])
local keep = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local per_login = {}
local window_add = {}
local window_order = {}
for i = 0, n - 1 do
  local b = 9 + i * 4
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
-- while what remains still covers `keep` difficulty units.
local wl, wt = p .. ':pplns:window', p .. ':pplns:total'
local total = tonumber(redis.call('GET', wt) or '0')
for _, login in ipairs(window_order) do
  redis.call('LPUSH', wl, string.format('%d', window_add[login]) .. ':' .. login)
  total = total + window_add[login]
end
while true do
  local tail = redis.call('LINDEX', wl, -1)
  if not tail then break end
  local score = tonumber(string.sub(tail, 1, string.find(tail, ':', 1, true) - 1))
  if total - score < keep then break end
  redis.call('RPOP', wl)
  total = total - score
end
redis.call('SET', wt, string.format('%d', total))
return 1
