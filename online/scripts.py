"""The Redis Lua script behind every online read: all windows of a batch in one round trip.

KEYS, 3 per row: customer events, terminal events, terminal frauds.
ARGV: the read plan (online/plan.py ReadPlan.argv), then 3 per row: t (epoch seconds), the
scored transaction's id ('' if none), the scored transaction's terminal ('' if none).
Returns, per row, ReadPlan.width integers:
    customer exists, terminal exists, transaction already ingested, scored terminal already
    among the customer's distinct terminals in the window (0/1),
    (cumulative count, cumulative cents) at each customer edge,
    distinct terminals, previous event time (-1: none within the horizon),
    terminal counts per interval, fraud counts per interval, the largest or smallest amount
    (cents, -1 if none) per extreme window, the first event's time (-1 if none) per
    first-seen window, the previous event's amount (cents, -1 if none) per last window.
Every lookup is O(log n) in the entity's size, except the distinct-terminal count, which reads
the customer's records of the last day (O(customer's payments that day)).
"""

READ = r"""
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
local n_x = tonumber(ARGV[i]); i = i + 1
local x_int = {}
for e = 1, n_x do
  x_int[e] = {tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}; i = i + 3
end
local n_s = tonumber(ARGV[i]); i = i + 1
local s_win = {}
for e = 1, n_s do s_win[e] = tonumber(ARGV[i]); i = i + 1 end
local n_l = tonumber(ARGV[i]); i = i + 1
local l_win = {}
for e = 1, n_l do l_win[e] = tonumber(ARGV[i]); i = i + 1 end

local out = {}
local o = 0
local function put(v) o = o + 1; out[o] = v end
local rows = #KEYS / 3
for r = 0, rows - 1 do
  local c_ev, t_ev, t_fraud = KEYS[3*r+1], KEYS[3*r+2], KEYS[3*r+3]
  local t = tonumber(ARGV[i]); local txid = ARGV[i + 1]; local term = ARGV[i + 2]; i = i + 3
  -- the oldest record kept: existence, and the prefix before it (any edge older than it)
  local first = redis.call('ZRANGE', c_ev, 0, 0, 'WITHSCORES')
  local base_n, base_s, first_t = 0, 0, nil
  if #first > 0 then
    local n, s, a = struct.unpack('>I4i8i8', first[1])
    base_n, base_s, first_t = n - 1, s - a, tonumber(first[2])
  end
  local t_size = redis.call('ZCARD', t_ev)
  put(#first > 0 and 1 or 0)
  put(t_size > 0 and 1 or 0)
  local seen = 0
  if txid ~= '' and t_size > 0 and redis.call('ZSCORE', t_ev, txid) then seen = 1 end
  put(seen)
  -- distinct terminals in (t - w, t], from the records themselves (exact at any t)
  local n_distinct, term_in = 0, 0
  if distinct_w > 0 and first_t then
    local recs = redis.call('ZRANGEBYSCORE', c_ev, '(' .. (t - distinct_w), t)
    local terms = {}
    for _, m in ipairs(recs) do
      local rest = string.sub(m, 21)
      local id = string.sub(rest, 1, string.find(rest, '\t', 1, true) - 1)
      if not terms[id] then terms[id] = true; n_distinct = n_distinct + 1 end
    end
    if term ~= '' and terms[term] then term_in = 1 end
  end
  put(term_in)
  -- edges ascend (0 first): the record found for a later edge is also the answer for an
  -- earlier edge whenever its time is already at or before that edge, so quiet customers
  -- cost one lookup for all their short windows
  local rec_t, rec_n, rec_s = nil, base_n, base_s
  local at_t = nil
  for e = 1, n_edges do
    local x = t - edges[e]
    if not first_t or x < first_t then
      put(base_n); put(base_s)
    elseif rec_t and rec_t <= x then
      put(rec_n); put(rec_s)
    else
      local rec = redis.call('ZREVRANGEBYSCORE', c_ev, x, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
      rec_n, rec_s = struct.unpack('>I4i8', rec[1])
      rec_t = tonumber(rec[2])
      put(rec_n); put(rec_s)
    end
    if e == 1 then at_t = rec_t end
  end
  put(n_distinct)
  local prev_t = -1
  if at_t and at_t < t then
    prev_t = at_t  -- the newest record at or before t is strictly before t: it is the previous
  elseif first_t and first_t < t then
    local prev = redis.call('ZREVRANGEBYSCORE', c_ev, '(' .. t, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #prev > 0 then prev_t = tonumber(prev[2]) end
  end
  if prev_t >= 0 and t - prev_t >= horizon then prev_t = -1 end
  put(prev_t)
  for e = 1, n_t do
    if t_size > 0 then
      put(redis.call('ZCOUNT', t_ev, '(' .. (t - t_int[e][1]), t - t_int[e][2]))
    else
      put(0)
    end
  end
  local has_fraud = t_size > 0 and redis.call('EXISTS', t_fraud) == 1
  for e = 1, n_f do
    if has_fraud then
      put(redis.call('ZCOUNT', t_fraud, '(' .. (t - f_int[e][1]), t - f_int[e][2]))
    else
      put(0)
    end
  end
  -- the largest (or smallest) amount in cents in (t - lo, t - hi], -1 when empty: reads the
  -- window's records, O(the customer's payments in that window)
  for e = 1, n_x do
    local best = -1
    if first_t then
      local recs = redis.call('ZRANGEBYSCORE', c_ev, '(' .. (t - x_int[e][1]), t - x_int[e][2])
      local is_max = x_int[e][3] == 1
      for _, m in ipairs(recs) do
        local _, _, a = struct.unpack('>I4i8i8', m)
        if best < 0 or (is_max and a > best) or (not is_max and a < best) then best = a end
      end
    end
    put(best)
  end
  -- the time of the first event in (t - w, t], -1 when none: one O(log n) lookup
  for e = 1, n_s do
    local f = -1
    if first_t then
      local r = redis.call('ZRANGEBYSCORE', c_ev, '(' .. (t - s_win[e]), t, 'WITHSCORES',
                           'LIMIT', 0, 1)
      if #r > 0 then f = tonumber(r[2]) end
    end
    put(f)
  end
  -- the amount (cents) of the latest event strictly before t within (t - w, t), the
  -- largest of that second's when several; -1 when none
  for e = 1, n_l do
    local v = -1
    if first_t then
      local r = redis.call('ZREVRANGEBYSCORE', c_ev, '(' .. t, '(' .. (t - l_win[e]),
                           'WITHSCORES', 'LIMIT', 0, 1)
      if #r > 0 then
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', c_ev, r[2], r[2])) do
          local _, _, a = struct.unpack('>I4i8i8', m)
          if a > v then v = a end
        end
      end
    end
    put(v)
  end
end
return out
"""
