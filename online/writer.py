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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ffs.errors import InputError
from ffs.online import layout
from ffs.online.layout import RecordFormat
from ffs.transformations.declarations import Agg, Entity
from ffs.transformations.derived import derive
from ffs.transformations.features import DERIVED_FUNCTIONS, ENTITIES, KEY_COLUMNS, windows_for


def write_tx_script(formats: Sequence[tuple[Entity, RecordFormat, int]]) -> str:
    """The transaction write, generated for the repo's entities [(entity, record format,
    retention)]: each entity's record layout and retention are written into the script, so
    an event carries only its own values (the generic script parsed the formats from every
    event's arguments and built its records through tables).

    KEYS: transaction index key, then per entity its events key and, for an entity with fraud
    rates, its fraud key.
    ARGV: t, txid, content ("t|keys|values|"), keep records from (a floor: a retention behind
    it), then per entity its numbers (hundredths, RecordFormat.numbers) and the record's
    tail (texts, each with a tab, then txid).
    Returns {status, late}: status written | duplicate | conflict; late = 1 when events of one
    of the event's entities at or after t were already stored (their enriched rows, computed
    before this event arrived, need recomputing)."""
    ev_keys, lines, k, a = [], [], 2, 5
    for _entity, fmt, ret in formats:
        ev, k = f"KEYS[{k}]", k + 1
        fr = None
        if fmt.fraud:
            fr, k = f"KEYS[{k}]", k + 1
        ev_keys.append(ev)
        own = [f"v{c + 1}" for c in range(len(fmt.numbers))]
        values = ", ".join(f"tonumber(ARGV[{a + c}])" for c in range(len(own)))
        body = [f"  local {', '.join(own)} = {values}"] if own else []
        tail = f"ARGV[{a + len(own)}]"
        a += len(own) + 1
        full = fmt.struct
        size = fmt.fixed_size
        if fmt.has_count:
            cum = ["n"] + [f"c{c}" for c in range(1, 1 + sum(2 if sq else 1 for sq in fmt.squares))]
            cum_fmt = ">I4" + "".join("i8d" if sq else "i8" for sq in fmt.squares)
            # the cumulative fields of a record and each one's own value
            adds, base, j = ["1"], ["f_n - 1"], 1
            for col, sq in zip(fmt.cumulative, fmt.squares, strict=True):
                v = own[fmt.numbers.index(col)]
                adds.append(v)
                base.append(f"f_c{j} - f_{v}")
                j += 1
                if sq:
                    adds.append(f"{v} * {v}")
                    base.append(f"f_c{j} - f_{v} * f_{v}")
                    j += 1
            f_names = [f"f_{x}" for x in cum] + [f"f_{v}" for v in own]
            l_names = [f"l_{x}" for x in cum] + [f"l_{v}" for v in own]
            moved = [f"l_{x} + {d}" for x, d in zip(cum, adds, strict=True)] + \
                [f"l_{v}" for v in own]
            mine = [f"{x} + {d}" for x, d in zip(cum, adds, strict=True)] + own
            body += [
                # the cumulative record just before this event (the last at or before t), or
                # the base before the oldest record kept
                f"  local {', '.join(cum)} = {', '.join('0' for _ in cum)}",
                f"  local prev = redis.call('ZREVRANGEBYSCORE', {ev}, t, '-inf', 'WITHSCORES', "
                "'LIMIT', 0, 1)",
                "  if #prev > 0 then",
                f"    {', '.join(cum)} = struct.unpack('{cum_fmt}', prev[1])",
                "    if tonumber(prev[2]) == t then is_late = 1 end  -- one of the same second",
                "  else",
                f"    local first = redis.call('ZRANGE', {ev}, 0, 0)",
                "    if #first > 0 then",
                f"      local {', '.join(f_names)} = struct.unpack('{full}', first[1])",
                f"      {', '.join(cum)} = {', '.join(base)}",
                "    end",
                "  end",
                # a late event: every later record moves up by one event and its values
                f"  local later = redis.call('ZRANGEBYSCORE', {ev}, '(' .. t, '+inf', "
                "'WITHSCORES')",
                "  for k = 1, #later, 2 do",
                "    local m = later[k]",
                f"    local {', '.join(l_names)} = struct.unpack('{full}', m)",
                f"    redis.call('ZREM', {ev}, m)",
                f"    redis.call('ZADD', {ev}, later[k + 1], struct.pack('{full}', "
                f"{', '.join(moved)}) .. string.sub(m, {size + 1}))",
                "  end",
                "  local newest = t",
                "  if #later > 0 then is_late = 1; newest = tonumber(later[#later]) end",
                f"  local fixed = struct.pack('{full}', {', '.join(mine)})"]
        else:
            # the newest event before this one: at or after t, this event is late
            body += [f"  local top = redis.call('ZRANGE', {ev}, -1, -1, 'WITHSCORES')",
                     "  local newest = t",
                     "  if #top > 0 and tonumber(top[2]) >= t then",
                     "    is_late = 1; newest = tonumber(top[2])",
                     "  end",
                     f"  local fixed = struct.pack('{full}', {', '.join(own)})" if size else
                     "  local fixed = ''"]
        body += [
            f"  redis.call('ZADD', {ev}, t, fixed .. {tail})",
            # trim what no read can need any more: older than the retention behind the
            # entity's newest event, and behind the caller's floor (the stream still reads
            # older times)
            f"  local cutoff = '(' .. math.min(newest - {ret}, keep - {ret})",
            f"  local trimmed = redis.call('ZREMRANGEBYSCORE', {ev}, '-inf', cutoff)"]
        if fr:
            # the spells of events trimmed go too (not the summary); a spell's score is its
            # event's time, so with no event trimmed there is none to trim
            body.append(f"  if trimmed > 0 then redis.call('ZREMRANGEBYSCORE', {fr}, "
                        "'(-1e13', cutoff) end")
        body.append(f"  redis.call('EXPIRE', {ev}, {ret})")
        lines += ["do", *body, "end"]
    max_ret = max((ret for _e, _f, ret in formats), default=0)
    late = "\n".join(f"  if redis.call('ZCOUNT', {ev}, t, '+inf') > 1 then return 1 end"
                     for ev in ev_keys)
    return (
        "local x_key = KEYS[1]\n"
        "local t, txid, content = tonumber(ARGV[1]), ARGV[2], ARGV[3]\n"
        "local keep = tonumber(ARGV[4])\n"
        "local is_late = 0  -- events of its entities at or after t were already stored\n"
        f"local function late()\n{late}\n  return 0\nend\n"
        "local x = redis.call('GET', x_key)\n"
        "if x then\n"
        "  if string.sub(x, 1, #content) ~= content then return {'conflict', 0} end\n"
        "  return {'duplicate', late()}\n"
        "end\n"
        + "\n".join(lines) + "\n"
        f"redis.call('SET', x_key, content .. '|', 'EX', {max_ret})\n"
        "return {'written', is_late}\n")


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


def record_tail(fmt: RecordFormat, event: Mapping[str, object]) -> str:
    """A record's text part: each distinct-counted value with a tab, then the txid."""
    return "".join(layout.text_of(c, event[c]) + "\t" for c in fmt.texts) + str(
        event["transaction_id"])


class OnlineWriter:
    def __init__(self, redis_conn, prefix: str = "ffs"):
        self.redis, self.prefix = redis_conn, prefix
        self._formats = [(e, layout.record_format(e), layout.retention_s(e)) for e in ENTITIES]
        self._tx = redis_conn.register_script(write_tx_script(self._formats))
        self._label = redis_conn.register_script(WRITE_LABEL)
        # per entity, what its part of an event's arguments is made of: built once
        self._plan = [(e, tuple(e.keys), fmt) for e, fmt, _r in self._formats]
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
        # the floor the script keeps records from (a retention behind it): none kept beyond
        # the retention (no reader behind), or every record (trim=False)
        keep = -1e18 if not trim else 1e18 if reads_from is None else int(reads_from)
        pipe = self.redis.pipeline(transaction=False)
        script, cents = self._tx, layout.cents_of
        for e in events:
            if _DERIVED and not _DERIVED <= e.keys():  # a hand-made event: as every path
                e = _with_derived(e)
            txid = str(e["transaction_id"])
            keys = [layout.tx_key(p, txid)]
            args: list[object] = [int(e["t"]), txid,  # type: ignore[call-overload]
                                  layout.content(e if isinstance(e, dict) else dict(e)), keep]
            for entity, key_cols, fmt in self._plan:
                value = layout.entity_value([e[k] for k in key_cols])
                keys.append(layout.entity_key(p, entity, value))
                if fmt.fraud:
                    keys.append(layout.fraud_key(p, entity, value))
                args += [cents(e.get(c)) for c in fmt.numbers]  # an optional one: null
                args.append(record_tail(fmt, e) if fmt.texts else txid)
            script(keys=keys, args=args, client=pipe)
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


_DERIVED = frozenset(name for fn in DERIVED_FUNCTIONS for name, _ in fn.outputs)


def _with_derived(event: Mapping) -> dict:
    """The event with the columns the repo's udfs derive (transformations/derived.py)."""
    got = derive(DERIVED_FUNCTIONS, [int(event["t"])], {c: [v] for c, v in event.items()})
    bad = [c for c, col in got.items() if col[0] is None]
    if bad:
        raise InputError(f"transaction {event.get('transaction_id')}: derived column(s) "
                         f"{bad}: the udf gave no finite number")
    return {**event, **{c: col[0] for c, col in got.items()}}
