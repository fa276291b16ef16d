"""The Redis Lua script behind every online read: all windows of every entity for a batch of
rows in one round trip, and which rows' transactions are already stored.

KEYS: per entity (the repo's order), 2 per row: the entity value's events and its fraud set
(online/layout.py); then the transaction index keys of the rows that carry a transaction.
ARGV: the number of entities, each entity's plan (its record format, layout.RecordFormat.argv,
then online/plan.py EntityPlan.argv), the number of rows, then per row: t (epoch seconds) and,
per entity, the scored event's values of its text columns ('' when the row carries none).
Returns, per entity and per row, EntityPlan.width integers:
    exists (0/1), previous event time strictly before t (-1: none, or not read),
    per cumulative edge: count, then per cumulative column its sum (and sum of squares),
    per counted interval: its count (entities without cumulative records),
    per fraud interval: the frauds in it known at t (online/layout.py: fraud spells),
    per distinct window: the distinct values in it, and 1 if the scored value is among them,
    per extreme window: the largest or smallest value (hundredths, -1 if empty),
    per first-seen window: the first event's time (-1 if none),
    per last-value window: the latest earlier event's value (hundredths, -1 if none);
then 0/1 per transaction index key: already stored.
Every lookup is O(log n) in the entity's size, except distinct counts and extremes, which read
the window's records (O(the entity's events in that window)), and fraud counts, which read
the window's fraud spells (O(its frauds)).
"""

READ = r"""
local META = -1e13  -- the fraud set's summary member sits at this score (layout.py)
local i = 1
local function num() local v = tonumber(ARGV[i]); i = i + 1; return v end
local function list_of(width)
  local n = num(); local out = {}
  for e = 1, n do
    local item = {}
    for w = 1, width do item[w] = num() end
    out[e] = item
  end
  return out
end
-- one plan per entity: record format, then the lookups
local function plan()
  local P = {cum = {}, num_at = {}}
  P.has_count = num() == 1
  local n_cum = num()
  for c = 1, n_cum do P.cum[c] = {num(), num() == 1} end
  P.n_num, P.n_txt = num(), num()
  local fmt, pos = '>', 0
  if P.has_count then fmt = fmt .. 'I4'; pos = 1 end
  for c = 1, n_cum do
    fmt = fmt .. 'i8'; pos = pos + 1
    if P.cum[c][2] then fmt = fmt .. 'd'; pos = pos + 1 end
  end
  for c = 1, P.n_num do fmt = fmt .. 'i8'; pos = pos + 1; P.num_at[c] = pos end
  P.fmt = fmt
  P.size = (fmt == '>') and 0 or struct.size(fmt)
  local n_edges = num()
  P.edges = {}
  for e = 1, n_edges do P.edges[e] = num() end
  P.intervals, P.frauds, P.distinct = list_of(2), list_of(2), list_of(3)
  P.extremes, P.firsts, P.lasts = list_of(4), list_of(2), list_of(3)
  P.recency = num() == 1
  return P
end
local n_ent = num()
local plans = {}
for e = 1, n_ent do plans[e] = plan() end
local rows = num()
local times, scored = {}, {}
for r = 1, rows do
  times[r] = num()
  scored[r] = {}
  for e = 1, n_ent do
    local s = {}
    for c = 1, plans[e].n_txt do s[c] = ARGV[i]; i = i + 1 end
    scored[r][e] = s
  end
end

local out, o = {}, 0
local function put(v) o = o + 1; out[o] = v end

local function fields(P, m) return {struct.unpack(P.fmt, m)} end
local function texts(P, m)
  local got, k = {}, 0
  for part in string.gmatch(string.sub(m, P.size + 1), '([^\t]*)\t') do
    k = k + 1; got[k] = part
  end
  return got
end

local function read(P, ev, fr, t, mine)
  -- existence (and the oldest record, when edges or recency need it)
  local first, exists
  if #P.edges > 0 or P.recency then
    first = redis.call('ZRANGE', ev, 0, 0, 'WITHSCORES')
    exists = #first > 0
  else
    exists = redis.call('ZCARD', ev) > 0
  end
  put(exists and 1 or 0)
  local prev_at = o + 1  -- the previous event's time, filled in once the edge at t is read
  put(-1)
  local at_t = nil
  -- cumulative edges, ascending backs: the record found for one edge also answers a later
  -- (older) edge whenever its time is already at or before it
  if #P.edges > 0 then
    local base, first_t = nil, nil
    if exists then
      local f = fields(P, first[1])
      base = {f[1] - 1}
      local k = 2
      for c = 1, #P.cum do
        local v = f[P.num_at[P.cum[c][1]]]
        base[#base + 1] = f[k] - v; k = k + 1
        if P.cum[c][2] then base[#base + 1] = f[k] - v * v; k = k + 1 end
      end
      first_t = tonumber(first[2])
    end
    local rec, rec_t = nil, nil
    local width = 1
    for c = 1, #P.cum do width = width + (P.cum[c][2] and 2 or 1) end
    for e = 1, #P.edges do
      local x = t - P.edges[e]
      local vals
      if not first_t or x < first_t then
        vals = base
      else
        if not (rec_t and rec_t <= x) then
          local got = redis.call('ZREVRANGEBYSCORE', ev, x, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
          rec, rec_t = fields(P, got[1]), tonumber(got[2])
        end
        vals = rec
        if P.edges[e] == 0 then at_t = rec_t end
      end
      for w = 1, width do put(vals and vals[w] or 0) end
    end
  end
  -- the previous event strictly before t: the record at t when it is older than t (no
  -- second lookup), else the newest record before t
  if P.recency and exists then
    local prev_t = -1
    if at_t and at_t < t then
      prev_t = at_t
    elseif tonumber(first[2]) < t then
      local p = redis.call('ZREVRANGEBYSCORE', ev, '(' .. t, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
      if #p > 0 then prev_t = tonumber(p[2]) end
    end
    out[prev_at] = prev_t
  end
  for _, iv in ipairs(P.intervals) do
    put(exists and redis.call('ZCOUNT', ev, '(' .. (t - iv[1]), t - iv[2]) or 0)
  end
  -- frauds: the window's spells known at t and not yet revised. When no spell was ever
  -- revised and none opened after t (the set's summary, layout.fraud_summary), that is
  -- every spell in the window: one ZCOUNT; otherwise the window's spells are read
  local has_fraud = #P.frauds > 0 and exists and redis.call('EXISTS', fr) == 1
  local quick = false
  if has_fraud then
    local meta = redis.call('ZRANGEBYSCORE', fr, META, META)
    if #meta > 0 then
      local newest, revised = string.match(meta[1], '\t(%d+)\t(%d+)$')
      quick = tonumber(revised) == 0 and tonumber(newest) <= t
    end
  end
  for _, iv in ipairs(P.frauds) do
    local n = 0
    if quick then
      n = redis.call('ZCOUNT', fr, '(' .. (t - iv[1]), t - iv[2])
    elseif has_fraud then
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', fr, '(' .. (t - iv[1]), t - iv[2])) do
        local from, till = string.match(m, '\t(%d+)\t(%d*)$')
        if tonumber(from) <= t and (till == '' or t < tonumber(till)) then n = n + 1 end
      end
    end
    put(n)
  end
  for _, d in ipairs(P.distinct) do
    local n, inside = 0, 0
    if exists then
      local seen = {}
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', ev, '(' .. (t - d[1]), t - d[2])) do
        local v = texts(P, m)[d[3]]
        if not seen[v] then seen[v] = true; n = n + 1 end
      end
      if mine[d[3]] ~= '' and seen[mine[d[3]]] then inside = 1 end
    end
    put(n); put(inside)
  end
  for _, x in ipairs(P.extremes) do
    local best = -1
    if exists then
      local at, is_max = P.num_at[x[3]], x[4] == 1
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', ev, '(' .. (t - x[1]), t - x[2])) do
        local a = fields(P, m)[at]
        if best < 0 or (is_max and a > best) or (not is_max and a < best) then best = a end
      end
    end
    put(best)
  end
  for _, iv in ipairs(P.firsts) do
    local f = -1
    if exists then
      local got = redis.call('ZRANGEBYSCORE', ev, '(' .. (t - iv[1]), t - iv[2],
                             'WITHSCORES', 'LIMIT', 0, 1)
      if #got > 0 then f = tonumber(got[2]) end
    end
    put(f)
  end
  -- the latest event strictly before t - D within (t - D - W, t - D); of that second's
  -- events, the largest value
  for _, l in ipairs(P.lasts) do
    local v = -1
    if exists then
      local got = redis.call('ZREVRANGEBYSCORE', ev, '(' .. (t - l[2]), '(' .. (t - l[1]),
                             'WITHSCORES', 'LIMIT', 0, 1)
      if #got > 0 then
        local at = P.num_at[l[3]]
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', ev, got[2], got[2])) do
          local a = fields(P, m)[at]
          if a > v then v = a end
        end
      end
    end
    put(v)
  end
end

for e = 1, n_ent do
  local base = (e - 1) * 2 * rows
  for r = 1, rows do
    read(plans[e], KEYS[base + 2 * r - 1], KEYS[base + 2 * r], times[r], scored[r][e])
  end
end
-- the rest of KEYS: transaction index keys, whether each is stored
for k = n_ent * 2 * rows + 1, #KEYS do put(redis.call('EXISTS', KEYS[k])) end
return out
"""
