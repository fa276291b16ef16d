"""Event-at-a-time writes to the online state, idempotent and safe for late events.

What the streaming job (and any producer) calls: `write_transactions` and `write_labels`.
Each event is applied by one Lua script, atomically, to every entity of the repo:

* a transaction whose id is already in the transaction index is a duplicate and changes
  nothing, so replaying a batch after a crash is harmless (exactly-once effects);
* a transaction older than others already stored is inserted at its place in time: an
  entity's later cumulative records are rewritten (+1, +value), which costs the number of
  records after it, bounded by the allowed lateness (entities without sums keep no
  cumulative part and rewrite nothing);
* a label applies only if it is at least as new as the label already known for that
  transaction ("is this write newer"), so reordered or replayed labels converge;
* records older than the retention are trimmed on each write; keys expire after retention.

Each call returns one outcome per event so callers can count and dead-letter what was not
applied (duplicate, unknown transaction, stale label).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ffs.online import layout
from ffs.online.layout import RecordFormat
from ffs.transformations.declarations import Agg, Entity
from ffs.transformations.features import ENTITIES, KEY_COLUMNS, windows_for

WRITE_TX = r"""
-- KEYS: transaction index key, then each entity's events and fraud keys (the repo's entities,
--       in order)
-- ARGV: t, txid, content ("t|keys|values|"), number of entities, then per entity: its record
--       format (layout.RecordFormat.argv), its numbers (hundredths), the record's tail
--       (texts, each with a tab, then txid), retention, keep records from (a floor), 1 if
--       the entity has fraud rates
-- returns {status, late}: status written | duplicate | conflict; late = 1 when events of one
-- of the event's entities at or after t were already stored (their enriched rows, computed
-- before this event arrived, need recomputing)
local x_key = KEYS[1]
local t, txid, content = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local n_ent = tonumber(ARGV[4])
local i = 5
local function num() local v = tonumber(ARGV[i]); i = i + 1; return v end
local ents = {}
for e = 1, n_ent do
  local d = {key = KEYS[2 * e], fraud = KEYS[2 * e + 1], cum = {}, vals = {}}
  d.has_count = num() == 1
  local n_cum = num()
  for c = 1, n_cum do d.cum[c] = {num(), num() == 1} end
  d.n_num, d.n_txt = num(), num()
  for c = 1, d.n_num do d.vals[c] = num() end
  d.tail = ARGV[i]; i = i + 1
  d.ret, d.keep, d.has_fraud = num(), num(), num() == 1
  local fmt = '>'
  if d.has_count then fmt = fmt .. 'I4' end
  for c = 1, n_cum do fmt = fmt .. (d.cum[c][2] and 'i8d' or 'i8') end
  for c = 1, d.n_num do fmt = fmt .. 'i8' end
  d.fmt = fmt
  d.size = (fmt == '>') and 0 or struct.size(fmt)
  ents[e] = d
end
local function late()
  for e = 1, n_ent do
    if redis.call('ZCOUNT', ents[e].key, t, '+inf') > 1 then return 1 end
  end
  return 0
end
local x = redis.call('GET', x_key)
if x then
  if string.sub(x, 1, #content) ~= content then return {'conflict', 0} end
  return {'duplicate', late()}
end

-- cumulative fields of a record: {count, sum, [squares], ...}; own values of its numbers
local function cum_fields(d, f)
  local out, k = {f[1]}, 2
  for c = 1, #d.cum do
    out[#out + 1] = f[k]; k = k + 1
    if d.cum[c][2] then out[#out + 1] = f[k]; k = k + 1 end
  end
  return out
end
local function pack(d, cum)
  if d.size == 0 then return '' end
  local args = {}
  if cum then for _, v in ipairs(cum) do args[#args + 1] = v end end
  for c = 1, d.n_num do args[#args + 1] = d.vals[c] end
  return struct.pack(d.fmt, unpack(args))
end
local max_ret = 0
for e = 1, n_ent do
  local d = ents[e]
  local fixed
  if d.has_count then
    -- the cumulative record just before this event (the last at or before t), or the base
    -- before the oldest record kept
    local before = nil
    local prev = redis.call('ZREVRANGEBYSCORE', d.key, t, '-inf', 'LIMIT', 0, 1)
    if #prev > 0 then
      before = cum_fields(d, {struct.unpack(d.fmt, prev[1])})
    else
      local first = redis.call('ZRANGE', d.key, 0, 0)
      if #first > 0 then
        local f = {struct.unpack(d.fmt, first[1])}
        before = cum_fields(d, f)
        local own_at = #before  -- own values follow the cumulative fields
        before[1] = before[1] - 1
        local k = 2
        for c = 1, #d.cum do
          local v = f[own_at + d.cum[c][1]]
          before[k] = before[k] - v; k = k + 1
          if d.cum[c][2] then before[k] = before[k] - v * v; k = k + 1 end
        end
      end
    end
    local function plus(cum)
      local out = {(cum and cum[1] or 0) + 1}
      local k = 2
      for c = 1, #d.cum do
        local v = d.vals[d.cum[c][1]]
        out[k] = (cum and cum[k] or 0) + v; k = k + 1
        if d.cum[c][2] then out[k] = (cum and cum[k] or 0) + v * v; k = k + 1 end
      end
      return out
    end
    -- a late event: every later record moves up by one event and its values
    local later = redis.call('ZRANGEBYSCORE', d.key, '(' .. t, '+inf', 'WITHSCORES')
    for k = 1, #later, 2 do
      local m = later[k]
      local f = {struct.unpack(d.fmt, m)}
      local moved = plus(cum_fields(d, f))
      local own = {}
      for c = 1, d.n_num do own[c] = f[#moved + c] end
      local args = {}
      for _, v in ipairs(moved) do args[#args + 1] = v end
      for c = 1, d.n_num do args[#args + 1] = own[c] end
      redis.call('ZREM', d.key, m)
      redis.call('ZADD', d.key, later[k + 1],
                 struct.pack(d.fmt, unpack(args)) .. string.sub(m, d.size + 1))
    end
    fixed = pack(d, plus(before))
  else
    fixed = pack(d, nil)
  end
  redis.call('ZADD', d.key, t, fixed .. d.tail)
  -- trim what no read can need any more: older than the retention behind the entity's
  -- newest event, and behind the caller's floor (the stream still reads older times)
  local newest = tonumber(redis.call('ZRANGE', d.key, -1, -1, 'WITHSCORES')[2])
  local cutoff = '(' .. math.min(newest - d.ret, d.keep)
  redis.call('ZREMRANGEBYSCORE', d.key, '-inf', cutoff)
  if d.has_fraud then  -- the spells of events trimmed go too
    redis.call('ZREMRANGEBYSCORE', d.fraud, '(-1e13', cutoff)  -- not the summary
  end
  redis.call('EXPIRE', d.key, d.ret)
  if d.ret > max_ret then max_ret = d.ret end
end
redis.call('SET', x_key, content .. '|', 'EX', max_ret)
return {'written', late()}
"""

WRITE_LABEL = r"""
-- KEYS: transaction index key; ARGV: prefix, is_fraud, label time, index retention, number
-- of entities with fraud rates, then per entity: name, number of keys, each key's position
-- among the index's keys (1-based), retention, label delay of its fraud rates
-- returns {status, anchors}: anchors = {entity, value, since, ...} for each entity whose fraud
-- set the label changed while its events at or after `since` are already stored (their
-- enriched rows, computed without this label, need recomputing). A label opens a fraud
-- spell (layout.py) or closes the open one at its own time: reads before it are unchanged.
local META = -1e13  -- the fraud set's summary member sits at this score (layout.py)
local x = redis.call('GET', KEYS[1])
if not x then return {'unknown_transaction', {}} end
local parts = {}
for p in string.gmatch(x, '([^|]*)|') do parts[#parts + 1] = p end
parts[#parts + 1] = string.match(x, '([^|]*)$')
local n = #parts
local lt = parts[n - 1]
local prefix, fraud, label_t = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = tonumber(parts[1])
if label_t < t then return {'before_transaction', {}} end
if lt ~= '' and tonumber(lt) > label_t then return {'stale', {}} end
local txid = string.sub(KEYS[1], #prefix + 4)
local anchors = {}
local i = 6
for e = 1, tonumber(ARGV[5]) do
  local name, nk = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  local ids = {}
  for k = 1, nk do ids[k] = parts[1 + tonumber(ARGV[i])]; i = i + 1 end
  local ret, delay = tonumber(ARGV[i]), tonumber(ARGV[i + 1]); i = i + 2
  local value = table.concat(ids, ',')
  local base = prefix .. ':{' .. name .. ':' .. value .. '}:'
  -- the open spell of this transaction (labelled fraud, not yet revised), if any
  local open = nil
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', base .. 'fraud', t, t)) do
    if string.sub(m, 1, #txid + 1) == txid .. '\t' and string.sub(m, -1) == '\t' then open = m end
  end
  local changed = 0
  -- the set's summary (layout.fraud_summary): newest spell start, spells revised
  local meta = redis.call('ZRANGEBYSCORE', base .. 'fraud', META, META)
  local newest, revised = 0, 0
  if #meta > 0 then
    local a, b = string.match(meta[1], '\t(%d+)\t(%d+)$')
    newest, revised = tonumber(a), tonumber(b)
  elseif redis.call('EXISTS', base .. 'fraud') == 1 then
    revised = 1  -- a set without its summary: never take the quick path on it
  end
  if fraud == '1' and not open then
    redis.call('ZADD', base .. 'fraud', t, txid .. '\t' .. label_t .. '\t')
    newest = math.max(newest, label_t)
    changed = 1
  elseif fraud ~= '1' and open then
    redis.call('ZREM', base .. 'fraud', open)
    local from = tonumber(string.match(open, '\t(%d+)\t$'))
    if label_t > from then
      redis.call('ZADD', base .. 'fraud', t, open .. label_t)
    end
    revised = revised + 1
    changed = 1
  end
  if changed == 1 then
    if #meta > 0 then redis.call('ZREM', base .. 'fraud', meta[1]) end
    redis.call('ZADD', base .. 'fraud', META,
               '#summary\t' .. string.format('%d', newest) .. '\t' .. revised)
  end
  if changed == 1 then redis.call('EXPIRE', base .. 'fraud', ret) end
  if changed == 1 then
    local since = math.max(label_t, t + delay)
    if redis.call('ZCOUNT', base .. 'ev', since, '+inf') > 0 then
      anchors[#anchors + 1] = name; anchors[#anchors + 1] = value
      anchors[#anchors + 1] = since
    end
  end
end
local content = string.sub(x, 1, #x - #lt - #parts[n] - 1)
redis.call('SET', KEYS[1], content .. label_t .. '|' .. fraud, 'KEEPTTL')
return {'written', anchors}
"""


@dataclass
class WriteOutcome:
    written: int = 0
    duplicate: int = 0
    conflict: int = 0  # same transaction_id, different content: the first one stays
    unknown_transaction: int = 0
    stale: int = 0
    before_transaction: int = 0  # a label stamped before its payment: refused, as in batch

    def add(self, outcome: bytes | str) -> str:
        name = outcome.decode() if isinstance(outcome, bytes) else outcome
        setattr(self, name, getattr(self, name) + 1)
        return name


def entity_ids(entity: Entity, event: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(str(event[k]) for k in entity.keys)


def record_tail(fmt: RecordFormat, event: Mapping[str, object]) -> str:
    """A record's text part: each distinct-counted value with a tab, then the txid."""
    return "".join(layout.text_of(c, event[c]) + "\t" for c in fmt.texts) + str(
        event["transaction_id"])


class OnlineWriter:
    def __init__(self, redis_conn, prefix: str = "ffs"):
        self.redis, self.prefix = redis_conn, prefix
        self._tx = redis_conn.register_script(WRITE_TX)
        self._label = redis_conn.register_script(WRITE_LABEL)
        self._formats = [(e, layout.record_format(e), layout.retention_s(e)) for e in ENTITIES]
        self._argv = [fmt.argv() for _e, fmt, _r in self._formats]  # per call, not per event
        self._index_ret = layout.index_retention_s()
        self._fraud_args: list[object] = []
        n = 0
        for e, fmt, ret in self._formats:
            if not fmt.fraud:
                continue
            d = min(w.delay_s for w in windows_for(e) if w.agg is Agg.FRAUD_RATE)
            self._fraud_args += [e.name, len(e.keys),
                                 *[KEY_COLUMNS.index(k) + 1 for k in e.keys], ret, d]
            n += 1
        self._fraud_args.insert(0, n)

    def write_transactions(self, events: Iterable[Mapping[str, object]],
                           reads_from: int | None = None, trim: bool = True
                           ) -> tuple[WriteOutcome, list[str], list[bool]]:
        """events: transaction_id, t (epoch seconds), every key column and value column.
        Pipelined; each event is one atomic script call. Returns totals, per-event outcomes
        and per-event "late" flags (events of one of its entities at or after it were
        already stored).

        reads_from: the oldest request time the caller will still read at (the stream reads
        each batch at its events' own times, which can be days behind the newest event of a
        backlog); records that such a read needs are not trimmed. trim=False keeps all."""
        p = self.prefix
        pipe = self.redis.pipeline(transaction=False)
        for e in events:
            keys = [layout.tx_key(p, e["transaction_id"])]
            args: list[object] = [int(e["t"]), str(e["transaction_id"]),  # type: ignore[call-overload]
                                  layout.content(dict(e)), len(self._formats)]
            for (entity, fmt, ret), fmt_argv in zip(self._formats, self._argv, strict=True):
                value = layout.entity_value(entity_ids(entity, e))
                keys += [layout.entity_key(p, entity, value), layout.fraud_key(p, entity, value)]
                args += fmt_argv
                args += [layout.cents_of(e[c]) for c in fmt.numbers]
                args.append(record_tail(fmt, e))
                if not trim:
                    keep = -1e18
                elif reads_from is None:
                    keep = 1e18
                else:
                    keep = reads_from - ret
                args += [ret, keep, int(fmt.fraud)]
            self._tx(keys=keys, args=args, client=pipe)
        replies = pipe.execute()
        total, statuses = self._outcomes(r[0] for r in replies)
        return total, statuses, [bool(r[1]) for r in replies]

    def write_labels(self, labels: Iterable[Mapping[str, object]]
                     ) -> tuple[WriteOutcome, list[str], list[list[tuple[str, str, int]]]]:
        """labels: transaction_id, is_fraud (0/1), label_t (epoch seconds). Returns totals,
        per-label outcomes and, per label, the (entity, value, since) whose events from
        `since` on were stored before the label changed their fraud counts."""
        pipe = self.redis.pipeline(transaction=False)
        for lab in labels:
            self._label(keys=[layout.tx_key(self.prefix, lab["transaction_id"])],
                        args=[self.prefix, int(lab["is_fraud"]),  # type: ignore[call-overload]
                              int(lab["label_t"]),  # type: ignore[call-overload]
                              self._index_ret, *self._fraud_args], client=pipe)
        replies = pipe.execute()
        total, statuses = self._outcomes(r[0] for r in replies)
        anchors = []
        for r in replies:
            flat = r[1]
            anchors.append([(_text(flat[k]), _text(flat[k + 1]), int(flat[k + 2]))
                            for k in range(0, len(flat), 3)])
        return total, statuses, anchors

    def stored_events(self, anchors: Mapping[tuple[str, str], int]) -> list[dict]:
        """The stored events of these (entity, value)s at or after each one's `since`, as
        event dicts (transaction_id, t, keys, values), from the transaction index."""
        if not anchors:
            return []
        by_name = {e.name: (e, fmt) for e, fmt, _ in self._formats}
        pipe = self.redis.pipeline(transaction=False)
        order = list(anchors.items())
        for (name, value), since in order:
            pipe.zrangebyscore(layout.entity_key(self.prefix, by_name[name][0], value), since,
                               "+inf")
        txids: dict[str, None] = {}
        for ((name, _value), _since), members in zip(order, pipe.execute(), strict=True):
            fmt = by_name[name][1]
            for m in members:
                txids[m[fmt.fixed_size:].decode().rsplit("\t", 1)[-1]] = None
        return [e for e in self.events(list(txids)) if e is not None]

    def events(self, txids: list[str]) -> list[dict | None]:
        """Each transaction's event as indexed (None when it is not stored)."""
        if not txids:
            return []
        raw = self.redis.mget([layout.tx_key(self.prefix, t) for t in txids])
        out: list[dict | None] = []
        for txid, value in zip(txids, raw, strict=True):
            if value is None:
                out.append(None)
                continue
            event = layout.decode_tx(value)
            event["transaction_id"] = txid
            out.append(event)
        return out

    def transaction_times(self, txids: list[str]) -> list[int | None]:
        return [None if e is None else int(e["t"]) for e in self.events(txids)]

    @staticmethod
    def _outcomes(replies) -> tuple[WriteOutcome, list[str]]:
        total = WriteOutcome()
        return total, [total.add(r) for r in replies]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
