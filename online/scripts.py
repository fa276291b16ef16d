"""The Redis Lua script behind every online read: all windows of a batch in one round trip.

KEYS, 4 per row: customer events, customer terminals, terminal events, terminal frauds.
ARGV: the read plan (online/plan.py ReadPlan.argv), then 3 per row: t (epoch seconds), the
scored transaction's id ('' if none), the scored transaction's terminal ('' if none).
Returns, per row, ReadPlan.width integers:
    customer exists, terminal exists, transaction already ingested, last time the customer
    used the scored terminal (-1: never),
    (cumulative count, cumulative cents) at each customer edge,
    distinct terminals, previous event time (-1: none within the horizon),
    terminal counts per interval, fraud counts per interval.
Every lookup is O(log n) in the entity's size.
"""

READ = r"""
local function cum_at(k, x)
  local r = redis.call('ZREVRANGEBYSCORE', k, x, '-inf', 'LIMIT', 0, 1)
  if #r == 0 then
    -- nothing at or before x: the prefix before the oldest record still kept
    local first = redis.call('ZRANGE', k, 0, 0)
    if #first == 0 then return 0, 0 end
    local n, s, a = struct.unpack('>I4i8i8', first[1])
    return n - 1, s - a
  end
  local n, s = struct.unpack('>I4i8', r[1])
  return n, s
end

local i = 1
local n_edges = tonumber(ARGV[i]); i = i + 1
local edges = {}
for e = 1, n_edges do edges[e] = tonumber(ARGV[i]); i = i + 1 end
local distinct_w = tonumber(ARGV[i]); i = i + 1
local horizon = tonumber(ARGV[i]); i = i + 1
local n_t = tonumber(ARGV[i]); i = i + 1
local t_int = {}
for e = 1, n_t do t_int[e] = {tonumber(ARGV[i]), tonumber(ARGV[i + 1])}; i = i + 2 end
local n_f = tonumber(ARGV[i]); i = i + 1
local f_int = {}
for e = 1, n_f do f_int[e] = {tonumber(ARGV[i]), tonumber(ARGV[i + 1])}; i = i + 2 end

local out = {}
local rows = #KEYS / 4
for r = 0, rows - 1 do
  local c_ev, c_term, t_ev, t_fraud = KEYS[4*r+1], KEYS[4*r+2], KEYS[4*r+3], KEYS[4*r+4]
  local t = tonumber(ARGV[i]); local txid = ARGV[i + 1]; local term = ARGV[i + 2]; i = i + 3
  out[#out + 1] = redis.call('EXISTS', c_ev)
  out[#out + 1] = redis.call('EXISTS', t_ev)
  local seen = 0
  if txid ~= '' and redis.call('ZSCORE', t_ev, txid) then seen = 1 end
  out[#out + 1] = seen
  local last = -1
  if term ~= '' then
    local s = redis.call('ZSCORE', c_term, term)
    if s then last = tonumber(s) end
  end
  out[#out + 1] = last
  for e = 1, n_edges do
    local n, s = cum_at(c_ev, t - edges[e])
    out[#out + 1] = n; out[#out + 1] = s
  end
  if distinct_w > 0 then
    out[#out + 1] = redis.call('ZCOUNT', c_term, '(' .. (t - distinct_w), t)
  else
    out[#out + 1] = 0
  end
  local prev = redis.call('ZREVRANGEBYSCORE', c_ev, '(' .. t, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #prev > 0 and t - tonumber(prev[2]) < horizon then
    out[#out + 1] = tonumber(prev[2])
  else
    out[#out + 1] = -1
  end
  for e = 1, n_t do
    out[#out + 1] = redis.call('ZCOUNT', t_ev, '(' .. (t - t_int[e][1]), t - t_int[e][2])
  end
  for e = 1, n_f do
    out[#out + 1] = redis.call('ZCOUNT', t_fraud, '(' .. (t - f_int[e][1]), t - f_int[e][2])
  end
end
return out
"""
