"""The Redis Lua script behind every online read: all windows of every entity for a batch of
rows in one round trip, and which rows' transactions are already stored.

The script is generated from the compiled plans (online/plan.py EntityPlan), once per client:
each entity's record layout, windows and lookups are written into it as straight-line Lua,
so a call carries only ids and times, and Redis neither parses a plan nor interprets one on
every row (the generic script that did cost 1.15-1.4x on every read).

KEYS: per entity (the plans' order), 2 per row: the entity value's events and its fraud set
(online/layout.py); then the transaction index keys of the rows that carry a transaction.
ARGV: the number of rows, then per row: t (epoch seconds) and, per entity, the scored
event's values of its text columns ('' when the row carries none).
Returns, per entity and per row, EntityPlan.width integers:
    exists (0/1), previous event time strictly before t (-1: none, or not read),
    per cumulative edge: count, then per cumulative column its sum (and sum of squares),
    per counted interval: its count (entities without cumulative records),
    per fraud interval: the frauds in it known at t (online/layout.py: fraud spells),
    per distinct window: the distinct values in it, and 1 if the scored value is among them,
    per extreme window: the largest or smallest value (hundredths, -1 if empty),
    per first-seen window: the first event's time (-1 if none),
    per last-value window: the latest earlier event's value (hundredths, NULL_CENTS if none);
then 0/1 per transaction index key: already stored.
Every lookup is O(log n) in the entity's size, except distinct counts and extremes, which read
the window's records (O(the entity's events in that window)), and fraud counts when a spell
was revised or opened after t, which read the fraud windows' spells once (O(its frauds)).
Lookups are shared where they can be: a window's records are read once for all its distinct
counts and extremes, and a window's last values once for all their columns, from the newest
records already read when they hold that second whole (a 100-row read of the shipped repo:
5.5 ms against 6.9 ms when each feature read its own, same replies, BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from ffs.online.plan import EntityPlan
from ffs.transformations.declarations import NULL_CENTS

__all__ = ["read_script"]

_PUT = "o = o + 1; out[o] = "


def read_script(plans: Sequence[EntityPlan]) -> str:
    """The read script for these plans (their order is the reply's)."""
    stride = 1 + sum(len(p.fmt.texts) for p in plans)
    parts = ["local out, o = {}, 0\nlocal rows = tonumber(ARGV[1])\n"]
    for e, plan in enumerate(plans, 1):
        parts.append(_entity(e, plan))
    at = 2  # the row's first text, relative to its t
    for e, plan in enumerate(plans, 1):
        texts = "".join(f", ARGV[a + {at + k - 1}]" for k in range(len(plan.fmt.texts)))
        at += len(plan.fmt.texts)
        base = (e - 1) * 2
        parts.append(f"for r = 1, rows do\n"
                     f"  local a = 2 + (r - 1) * {stride}\n"
                     f"  read_{e}(KEYS[{base} * rows + 2 * r - 1], KEYS[{base} * rows + 2 * r],"
                     f" tonumber(ARGV[a]){texts})\n"
                     f"end\n")
    parts.append(f"for k = {2 * len(plans)} * rows + 1, #KEYS do "
                 f"{_PUT}redis.call('EXISTS', KEYS[k]) end\n"
                 "return out\n")
    return "".join(parts)


def _lua_list(values: list[int]) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


def _offsets(plan: EntityPlan) -> tuple[str, str, list[int]]:
    """The record's cumulative part as Lua's struct reads it, the whole fixed part, and the
    byte offset (1-based) of each number column's own value."""
    fmt = plan.fmt
    nums = [fmt.cum_size + 8 * k + 1 for k in range(len(fmt.numbers))]
    return fmt.cum_struct, fmt.struct, nums


def _entity(e: int, plan: EntityPlan) -> str:
    fmt = plan.fmt
    cum_fmt, full_fmt, num_at = _offsets(plan)
    size = fmt.fixed_size
    width = plan.edge_width
    texts = [f"s{k + 1}" for k in range(len(fmt.texts))]
    defaults = ([0, -1] + [0] * (len(plan.edges) * width) + [0] * len(plan.intervals)
                + [0] * len(plan.frauds) + [0, 0] * len(plan.distinct)
                + [-1] * (len(plan.extremes) + len(plan.firsts))
                + [NULL_CENTS] * len(plan.lasts))
    L = [f"local D{e} = {_lua_list(defaults)}",
         f"local function read_{e}(ev, fr, t{''.join(', ' + s for s in texts)})"]
    if plan.edges or plan.recency:
        L += _records(e, plan, len(defaults))
    elif plan.intervals:
        # the counts first: any of them above 0 says the entity exists, without a ZCARD
        counts = [f"k{k}" for k in range(len(plan.intervals))]
        L += [f"  local {c} = redis.call('ZCOUNT', ev, '(' .. (t - {lo}), t - {hi})"
              for c, (lo, hi) in zip(counts, plan.intervals, strict=True)]
        L += [f"  if {' and '.join(c + ' == 0' for c in counts)} and "
              "redis.call('ZCARD', ev) == 0 then",
              f"    for k = 1, {len(defaults)} do {_PUT}D{e}[k] end", "    return", "  end",
              f"  {_PUT}1; {_PUT}-1",
              *[f"  {_PUT}{c}" for c in counts]]
    else:
        L += ["  if redis.call('ZCARD', ev) == 0 then",
              f"    for k = 1, {len(defaults)} do {_PUT}D{e}[k] end", "    return", "  end",
              f"  {_PUT}1; {_PUT}-1"]
    if plan.frauds:
        L += _frauds(plan)
    # one scan per window, shared by its distinct counts and extremes
    scans = {iv: k for k, iv in enumerate(dict.fromkeys(
        [(lo, hi) for lo, hi, _ in plan.distinct] + [(lo, hi) for lo, hi, _, _ in plan.extremes]))}
    L += [f"  local w{k} = redis.call('ZRANGEBYSCORE', ev, '(' .. (t - {lo}), t - {hi})"
          for (lo, hi), k in scans.items()]
    for lo, hi, col in plan.distinct:
        pattern = "^" + "[^\\t]*\\t" * (col - 1) + "([^\\t]*)\\t"
        mine = texts[col - 1]
        L += ["  do",
              "    local n, inside, seen = 0, 0, {}",
              f"    for _, m in ipairs(w{scans[(lo, hi)]}) do",
              f"      local v = string.match(m, '{pattern}', {size + 1})",
              "      if not seen[v] then seen[v] = true; n = n + 1 end",
              "    end",
              f"    if {mine} ~= '' and seen[{mine}] then inside = 1 end",
              f"    {_PUT}n; {_PUT}inside",
              "  end"]
    for lo, hi, col, is_max in plan.extremes:
        better = "a > best" if is_max else "a < best"
        L += ["  do",
              "    local best = -1",
              f"    for _, m in ipairs(w{scans[(lo, hi)]}) do",
              f"      local a = struct.unpack('>i8', m, {num_at[col - 1]})",
              f"      if best < 0 or {better} then best = a end",
              "    end",
              f"    {_PUT}best",
              "  end"]
    for lo, hi in plan.firsts:
        L += ["  do",
              "    local f = -1",
              f"    local got = redis.call('ZRANGEBYSCORE', ev, '(' .. (t - {lo}), t - {hi}, "
              "'WITHSCORES', 'LIMIT', 0, 1)",
              "    if #got > 0 then f = tonumber(got[2]) end",
              f"    {_PUT}f",
              "  end"]
    if plan.lasts:
        L += _lasts(plan, num_at, bool(plan.edges or plan.recency))
    L += ["end", ""]
    return "\n".join(L)


def _lasts(plan: EntityPlan, num_at: list[int], has_recent: bool) -> list[str]:
    """Last values: the latest event strictly before t - D within (t - D - W, t - D), and of
    that second's events the largest value. None: NULL_CENTS, below every value (values may
    be negative: coordinates), which an optional column's null also is, so a second with
    only nulls gives null. The columns of one window share its lookup; with the newest
    records at hand (`recent`, _records), a second found among them whose records they hold
    whole needs no call at all (a handbook customer: four calls a row fewer)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (lo, hi, _col) in enumerate(plan.lasts):
        groups.setdefault((lo, hi), []).append(k)
    L = []
    for (lo, hi), members in groups.items():
        vs = [f"l{k}" for k in members]
        take = [f"        local a = struct.unpack('>i8', m, {num_at[plan.lasts[k][2] - 1]})\n"
                f"        if a > l{k} then l{k} = a end" for k in members]
        L += [f"  local {', '.join(vs)} = {', '.join(str(NULL_CENTS) for _ in vs)}",
              "  do",
              "    local at, ms = nil, nil  -- the second, and its records when at hand"]
        if has_recent:
            L += ["    local k = 1",
                  f"    while k < #recent and tonumber(recent[k + 1]) >= t - {hi} do k = k + 2 end",
                  "    if k < #recent then",
                  f"      if tonumber(recent[k + 1]) > t - {lo} then",
                  "        at = recent[k + 1]",
                  "        local j = k",
                  "        while j < #recent and recent[j + 1] == at do j = j + 2 end",
                  "        if j < #recent or not full then  -- every record of that second",
                  "          ms = {}",
                  "          for i = k, j - 2, 2 do ms[#ms + 1] = recent[i] end",
                  "        end",
                  "      end",
                  "    elseif full then"]
            ind = "      "
        else:
            L += ["    do"]
            ind = "      "
        L += [f"{ind}local got = redis.call('ZREVRANGEBYSCORE', ev, '(' .. (t - {hi}), "
              f"'(' .. (t - {lo}), 'WITHSCORES', 'LIMIT', 0, 1)",
              f"{ind}if #got > 0 then at = got[2] end",
              "    end",
              "    if at then",
              "      for _, m in ipairs(ms or redis.call('ZRANGEBYSCORE', ev, at, at)) do",
              *take,
              "      end",
              "    end",
              "  end"]
    L += [f"  {_PUT}l{k}" for k in range(len(plan.lasts))]
    return L


# how many of the newest records at or before t one call fetches: enough for the short
# windows of a typical entity (a handbook customer has ~2 events a day), so its edges of the
# last minutes, hours and day need no lookup of their own
RECENT = 4


def _records(e: int, plan: EntityPlan, n_defaults: int) -> list[str]:
    """Existence, the cumulative edges and the previous event, from the newest RECENT records
    at or before t; an edge or previous event older than those is one lookup, and an edge
    older than the oldest record kept is the base before it (from ZRANGE 0 0, read only
    then): nothing (0) when that record is the entity value's first event (count 1),
    otherwise that record's cumulative fields (a trim keeps the newest second it would drop,
    online/layout.py, so an edge that old is past the retention)."""
    cum_fmt, _full_fmt, _ = _offsets(plan)
    width = plan.edge_width
    L = [f"  local recent = redis.call('ZREVRANGEBYSCORE', ev, t, '-inf', 'WITHSCORES', "
         f"'LIMIT', 0, {RECENT})",
         f"  local full = #recent == {2 * RECENT}  -- more records at or before t than these",
         "  local first = nil",
         "  if #recent == 0 then",
         "    first = redis.call('ZRANGE', ev, 0, 0, 'WITHSCORES')",
         "    if #first == 0 then",
         f"      for k = 1, {n_defaults} do {_PUT}D{e}[k] end", "      return", "    end",
         "  elseif not full then",
         "    first = {recent[#recent - 1], recent[#recent]}  -- the oldest record of all",
         "  end",
         f"  {_PUT}1"]
    if plan.recency:
        L += ["  local prev_at = o + 1"]
    L.append(f"  {_PUT}-1")
    if plan.edges:
        names = ["n"] + [f"c{k}" for k in range(1, width)]
        bnames = [f"b{k}" for k in range(width)]
        rnames = [f"r{k}" for k in range(width)]
        L += [f"  local {', '.join(bnames)}",
              "  local below = false  -- x is older than every record kept",
              f"  local rec_t, {', '.join(rnames)} = nil",
              "  local j = 1  -- the first of the recent records not newer than x",
              "  local x, got"]
        # ascending backs, so x descends: the record found for one edge also answers a later
        # (older) edge whenever its time is already at or before it
        for back in plan.edges:
            L += [f"  x = t - {back}",
                  "  if not below and not (rec_t and rec_t <= x) then",
                  "    rec_t = nil",
                  "    while j < #recent and tonumber(recent[j + 1]) > x do j = j + 2 end",
                  "    if j < #recent then",
                  f"      {', '.join(rnames)} = struct.unpack('{cum_fmt}', recent[j])",
                  "      rec_t = tonumber(recent[j + 1])",
                  "    elseif full then",
                  "      got = redis.call('ZREVRANGEBYSCORE', ev, x, '-inf', 'WITHSCORES', "
                  "'LIMIT', 0, 1)",
                  "      if #got > 0 then",
                  f"        {', '.join(rnames)} = struct.unpack('{cum_fmt}', got[1])",
                  "        rec_t = tonumber(got[2])",
                  "      end",
                  "    end",
                  "  end",
                  "  if rec_t then",
                  *[f"    {_PUT}{r}" for r in rnames],
                  "  else  -- older than every record kept",
                  "    if not below then",
                  "      below = true",
                  "      if not first then first = redis.call('ZRANGE', ev, 0, 0, "
                  "'WITHSCORES') end",
                  "      do",
                  f"        local {', '.join(names)} = struct.unpack('{cum_fmt}', first[1])",
                  f"        if n == 1 then {', '.join(bnames)} = "
                  f"{', '.join('0' for _ in bnames)}",
                  f"        else {', '.join(bnames)} = {', '.join(names)} end",
                  "      end",
                  "    end",
                  *[f"    {_PUT}{b}" for b in bnames],
                  "  end"]
    if plan.recency:
        # the previous event strictly before t
        L += ["  do",
              "    local prev_t = -1",
              "    local k = 1",
              "    while k < #recent and tonumber(recent[k + 1]) >= t do k = k + 2 end",
              "    if k < #recent then",
              "      prev_t = tonumber(recent[k + 1])",
              "    elseif full then",
              "      local p = redis.call('ZREVRANGEBYSCORE', ev, '(' .. t, '-inf', "
              "'WITHSCORES', 'LIMIT', 0, 1)",
              "      if #p > 0 then prev_t = tonumber(p[2]) end",
              "    end",
              "    out[prev_at] = prev_t",
              "  end"]
    for lo, hi in plan.intervals:
        L.append(f"  {_PUT}redis.call('ZCOUNT', ev, '(' .. (t - {lo}), t - {hi})")
    return L


def _frauds(plan: EntityPlan) -> list[str]:
    """Fraud counts: the window's spells known at t and not yet revised. The set's lowest
    member is its summary (layout.fraud_summary, at layout.FRAUD_SUMMARY_SCORE, below every
    event time): with no spell ever revised and none opened after t, every spell in a window counts
    and a window is one ZCOUNT; otherwise the spells of all fraud windows are read once."""
    wins = plan.frauds
    widest_lo, nearest_hi = max(lo for lo, _ in wins), min(hi for _, hi in wins)
    L = ["  do",
         "    local head = redis.call('ZRANGE', fr, 0, 0)",
         "    local quick = false",
         "    if #head > 0 then",
         "      local newest, revised = string.match(head[1], '^#summary\\t(%d+)\\t(%d+)$')",
         "      quick = newest ~= nil and tonumber(revised) == 0 and tonumber(newest) <= t",
         "    end",
         "    if quick then",
         *[f"      {_PUT}redis.call('ZCOUNT', fr, '(' .. (t - {lo}), t - {hi})"
           for lo, hi in wins],
         "    elseif #head > 0 then",
         f"      local {', '.join(f'n{k}' for k in range(len(wins)))} = "
         f"{', '.join('0' for _ in wins)}",
         f"      local got = redis.call('ZRANGEBYSCORE', fr, '(' .. (t - {widest_lo}), "
         f"t - {nearest_hi}, 'WITHSCORES')",
         "      for k = 1, #got, 2 do",
         "        local from, till = string.match(got[k], '\\t(%d+)\\t(%d*)$')",
         "        if tonumber(from) <= t and (till == '' or t < tonumber(till)) then",
         "          local s = tonumber(got[k + 1])",
         *[f"          if s > t - {lo} and s <= t - {hi} then n{k} = n{k} + 1 end"
           for k, (lo, hi) in enumerate(wins)],
         "        end",
         "      end",
         *[f"      {_PUT}n{k}" for k in range(len(wins))],
         "    else",
         *[f"      {_PUT}0" for _ in wins],
         "    end",
         "  end"]
    return L
