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
* records older than the retention are trimmed on each write (an entity with sums keeps the
  newest second older than it: the base of its later windows); keys expire after retention.

Each call returns one outcome per event so callers can count and dead-letter what was not
applied (duplicate, unknown transaction, stale label).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ffs.errors import InputError
from ffs.online import layout
from ffs.online.layout import RecordFormat
from ffs.online.script_call import overlapped
from ffs.online.shards import Shards, is_cluster, slot_of
from ffs.transformations.declarations import Agg, Entity
from ffs.transformations.derived import DerivedError, derive_event
from ffs.transformations.features import DERIVED_FUNCTIONS, ENTITIES, KEY_COLUMNS, windows_for


def write_tx_script(formats: Sequence[tuple[Entity, RecordFormat, int]]) -> str:
    """The transaction write, generated for the repo's entities [(entity, record format,
    retention)]: each entity's record layout and retention are written into the script, so
    an event carries only its own values (the generic script parsed the formats from every
    event's arguments and built its records through tables).

    KEYS: transaction index key, then per entity its events key and, for an entity with fraud
    rates, its fraud key.
    ARGV: t, txid, content ("t|keys|values|"), keep records from (a floor: a retention behind
    it), then per entity its numbers (hundredths, RecordFormat.inputs) and the record's
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
        body, a = _entity_write(fmt, ret, ev, fr, a)
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


def _entity_write(fmt: RecordFormat, ret: int, ev: str, fr: str | None, a: int
                  ) -> tuple[list[str], int]:
    """One entity's part of a transaction write (Lua lines), with its values from ARGV[a]
    on: the record inserted at its place in time (later cumulative records moved up), then
    what the retention no longer needs trimmed. Sets `is_late`; reads `t` and `keep`.
    Returns the lines and the next ARGV position. Both write scripts are made of it: one
    Redis (every entity in one call) and a cluster (one call per entity value)."""
    # the event's numbers (RecordFormat.inputs); the record keeps those of fmt.numbers
    var = {c: f"v{k + 1}" for k, c in enumerate(fmt.inputs)}
    own = [var[c] for c in fmt.numbers]
    values = ", ".join(f"tonumber(ARGV[{a + c}])" for c in range(len(var)))
    body = [f"  local {', '.join(var.values())} = {values}"] if var else []
    tail = f"ARGV[{a + len(var)}]"
    a += len(var) + 1
    full = fmt.struct
    size = fmt.fixed_size
    if fmt.has_count:
        cum = ["n"] + [f"c{c}" for c in range(1, 1 + sum(2 if sq else 1 for sq in fmt.squares))]
        cum_fmt = fmt.cum_struct
        # what this event adds to each cumulative field
        adds = ["1"]
        for col, sq in zip(fmt.cumulative, fmt.squares, strict=True):
            v = var[col]
            adds += [v, f"{v} * {v}"] if sq else [v]
        f_names = [f"f_{x}" for x in cum]
        l_names = [f"l_{x}" for x in cum] + [f"l_{v}" for v in own]
        moved = [f"l_{x} + {d}" for x, d in zip(cum, adds, strict=True)] + \
            [f"l_{v}" for v in own]
        mine = [f"{x} + {d}" for x, d in zip(cum, adds, strict=True)] + own
        body += [
            # the cumulative record just before this event (the last at or before t), or
            # the base before the oldest record kept (online/scripts.py _records: nothing
            # before an entity value's first event, count 1; else that record's fields)
            f"  local {', '.join(cum)} = {', '.join('0' for _ in cum)}",
            f"  local prev = redis.call('ZREVRANGEBYSCORE', {ev}, t, '-inf', 'WITHSCORES', "
            "'LIMIT', 0, 1)",
            "  if #prev > 0 then",
            f"    {', '.join(cum)} = struct.unpack('{cum_fmt}', prev[1])",
            "    if tonumber(prev[2]) == t then is_late = 1 end  -- one of the same second",
            "  else",
            f"    local first = redis.call('ZRANGE', {ev}, 0, 0)",
            "    if #first > 0 then",
            f"      local {', '.join(f_names)} = struct.unpack('{cum_fmt}', first[1])",
            f"      if f_n > 1 then {', '.join(cum)} = {', '.join(f_names)} end",
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
        f"  local cutoff = '(' .. math.min(newest - {ret}, keep - {ret})"]
    if fmt.has_count:
        # ... but the newest second older than that stays: its last record is the base of
        # every later window (records keep no own value of a column only summed)
        body += [
            "  local trimmed = 0",
            f"  local last = redis.call('ZREVRANGEBYSCORE', {ev}, cutoff, '-inf', 'WITHSCORES',"
            " 'LIMIT', 0, 1)",
            "  if #last > 0 then",
            "    cutoff = '(' .. last[2]",
            f"    trimmed = redis.call('ZREMRANGEBYSCORE', {ev}, '-inf', cutoff)",
            "  end"]
    else:
        body.append(f"  local trimmed = redis.call('ZREMRANGEBYSCORE', {ev}, '-inf', cutoff)")
    if fr:
        # the spells of events trimmed go too (not the summary); a spell's score is its
        # event's time, so with no event trimmed there is none to trim
        body.append(f"  if trimmed > 0 then redis.call('ZREMRANGEBYSCORE', {fr}, "
                    "'(-1e13', cutoff) end")
    body.append(f"  redis.call('EXPIRE', {ev}, {ret})")
    return body, a


def write_entity_script(fmt: RecordFormat, ret: int) -> str:
    """A cluster's transaction write for one entity value (its keys share one slot; the index
    key cannot share it with every entity, so a cluster writes each entity value, then the
    index: OnlineWriter._write_shards).

    KEYS: the entity value's events key and, with fraud rates, its fraud key.
    ARGV: t, txid, keep (as write_tx_script), check_only (1: the index already holds this
    transaction: only say whether it is late), then the entity's numbers and record tail.
    Returns {status, late}: written, or duplicate when the index holds it or a record of this
    txid is already at t (a write retried after a failure before its index write): applying
    it twice counts nothing twice."""
    body, _ = _entity_write(fmt, ret, "KEYS[1]", "KEYS[2]" if fmt.fraud else None, 5)
    return (
        "local t, txid, keep = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])\n"
        "local is_late = 0\n"
        "local function late()\n"
        "  if redis.call('ZCOUNT', KEYS[1], t, '+inf') > 1 then return 1 end\n"
        "  return 0\n"
        "end\n"
        "if ARGV[4] == '1' then return {'duplicate', late()} end\n"
        "for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], t, t)) do\n"
        f"  local tail = string.sub(m, {fmt.fixed_size + 1})\n"
        "  if tail == txid or string.sub(tail, -(#txid + 1)) == '\\t' .. txid then\n"
        "    return {'duplicate', late()}\n"
        "  end\n"
        "end\n"
        "do\n" + "\n".join(body) + "\nend\n"
        "return {'written', is_late}\n")


# One entity value's fraud set after a label (layout.py: fraud spells), shared by both label
# scripts. Returns the `since` of the enriched rows to recompute (the set changed while its
# events at or after it are stored), or nil. `rerun`: a cluster's label is one call per
# entity value and then the index, so a label re-applied after a failure between them finds
# its own spell already there: it reports `since` again (the first run's corrections were
# never published), changing nothing.
_APPLY_LABEL = r"""
local META = -1e13  -- the fraud set's summary member sits at this score (layout.py)
local function apply_label(fr, ev, txid, t, fraud, label_t, ret, delay, rerun)
  -- the open spell of this transaction (labelled fraud, not yet revised), if any
  local open, mine = nil, false
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', fr, t, t)) do
    if string.sub(m, 1, #txid + 1) == txid .. '\t' then
      if string.sub(m, -1) == '\t' then open = m end
      if rerun and ((fraud == '1' and m == txid .. '\t' .. label_t .. '\t') or
          (fraud ~= '1' and string.sub(m, -1) ~= '\t' and
           string.match(m, '\t(%d+)$') == tostring(label_t))) then mine = true end
    end
  end
  local changed = 0
  -- the set's summary (layout.fraud_summary): newest spell start, spells revised
  local meta = redis.call('ZRANGEBYSCORE', fr, META, META)
  local newest, revised = 0, 0
  if #meta > 0 then
    local a, b = string.match(meta[1], '\t(%d+)\t(%d+)$')
    newest, revised = tonumber(a), tonumber(b)
  elseif redis.call('EXISTS', fr) == 1 then
    revised = 1  -- a set without its summary: never take the quick path on it
  end
  if fraud == '1' and not open then
    redis.call('ZADD', fr, t, txid .. '\t' .. label_t .. '\t')
    newest = math.max(newest, label_t)
    changed = 1
  elseif fraud ~= '1' and open then
    redis.call('ZREM', fr, open)
    local from = tonumber(string.match(open, '\t(%d+)\t$'))
    if label_t > from then
      redis.call('ZADD', fr, t, open .. label_t)
    end
    revised = revised + 1
    changed = 1
  end
  if changed == 1 then
    if #meta > 0 then redis.call('ZREM', fr, meta[1]) end
    redis.call('ZADD', fr, META,
               '#summary\t' .. string.format('%d', newest) .. '\t' .. revised)
    redis.call('EXPIRE', fr, ret)
  end
  if changed == 1 or mine then
    local since = math.max(label_t, t + delay)
    if redis.call('ZCOUNT', ev, since, '+inf') > 0 then return since end
  end
  return nil
end
"""

WRITE_LABEL = _APPLY_LABEL + r"""
-- KEYS: transaction index key; ARGV: prefix, is_fraud, label time, index retention, number
-- of entities with fraud rates, then per entity: name, number of keys, each key's position
-- among the index's keys (1-based), retention, label delay of its fraud rates
-- returns {status, anchors}: anchors = {entity, value, since, ...} for each entity whose fraud
-- set the label changed while its events at or after `since` are already stored (their
-- enriched rows, computed without this label, need recomputing). A label opens a fraud
-- spell (layout.py) or closes the open one at its own time: reads before it are unchanged.
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
  local since = apply_label(base .. 'fraud', base .. 'ev', txid, t, fraud, label_t, ret, delay,
                            false)
  if since then
    anchors[#anchors + 1] = name; anchors[#anchors + 1] = value
    anchors[#anchors + 1] = since
  end
end
local content = string.sub(x, 1, #x - #lt - #parts[n] - 1)
redis.call('SET', KEYS[1], content .. label_t .. '|' .. fraud, 'KEEPTTL')
return {'written', anchors}
"""

# A cluster's label, per entity value (its fraud set and events share a slot). KEYS: fraud
# set, events; ARGV: txid, transaction time, is_fraud, label time, retention, label delay.
# Returns `since` (see _APPLY_LABEL) or -1.
WRITE_LABEL_ENTITY = _APPLY_LABEL + r"""
local since = apply_label(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[3],
                          tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), true)
return since or -1
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
    # a cluster: how long a primary may take to pass a batch's writes to a replica before
    # the batch fails (and is re-run): a write acknowledged by a primary that dies before
    # replicating it would be lost at failover (Redis replicates asynchronously)
    REPLICA_WAIT_MS = 2000

    def __init__(self, redis_conn, prefix: str = "ffs"):
        self.redis, self.prefix = redis_conn, prefix
        self._formats = [(e, layout.record_format(e), layout.retention_s(e)) for e in ENTITIES]
        # a Redis Cluster: per entity value, then the index (_write_shards); chosen once here
        self._shards = Shards(redis_conn) if is_cluster(redis_conn) else None
        if self._shards is not None:
            self._entity_tx = {e.name: self._shards.script(write_entity_script(fmt, ret))
                               for e, fmt, ret in self._formats}
            self._entity_label = self._shards.script(WRITE_LABEL_ENTITY)
        else:
            self._tx = redis_conn.register_script(write_tx_script(self._formats))
            self._label = redis_conn.register_script(WRITE_LABEL)
        # per entity, what its part of an event's arguments is made of: built once
        self._plan = [(e, tuple(e.keys), fmt) for e, fmt, _r in self._formats]
        self._index_ret = layout.index_retention_s()
        self._fraud_args: list[object] = []
        # per entity with fraud rates: (entity, its keys' positions in the index, retention,
        # label delay)
        self._fraud: list[tuple[Entity, list[int], int, int]] = []
        for e, fmt, ret in self._formats:
            if not fmt.fraud:
                continue
            d = min(w.delay_s for w in windows_for(e) if w.agg is Agg.FRAUD_RATE)
            at = [KEY_COLUMNS.index(k) + 1 for k in e.keys]
            self._fraud_args += [e.name, len(e.keys), *at, ret, d]
            self._fraud.append((e, at, ret, d))
        self._fraud_args.insert(0, len(self._fraud))

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
        # the floor the script keeps records from (a retention behind it): none kept beyond
        # the retention (no reader behind), or every record (trim=False)
        keep = -1e18 if not trim else 1e18 if reads_from is None else int(reads_from)
        if self._shards is not None:
            return self._write_shards(events, keep)
        # a hand-made event gets its derived columns as on every path; first, for all, so
        # an event they refuse (InputError) stops the call before anything is written
        events = [e if not _DERIVED or _DERIVED <= e.keys() else _with_derived(e)
                  for e in events]
        replies = overlapped(self.redis, self._tx, self._tx_calls(events, keep))
        total, statuses = self._outcomes(r[0] for r in replies)
        return total, statuses, [bool(r[1]) for r in replies]

    def _tx_calls(self, events: list[Mapping[str, object]], keep: float
                  ) -> Iterator[tuple[list, list]]:
        """The payment script's keys and arguments for each event (built as they are sent)."""
        p, cents = self.prefix, layout.cents_of
        for e in events:
            txid = str(e["transaction_id"])
            keys = [layout.tx_key(p, txid)]
            args: list[object] = [int(e["t"]), txid,  # type: ignore[call-overload]
                                  layout.content(e if isinstance(e, dict) else dict(e)), keep]
            for entity, key_cols, fmt in self._plan:
                value = layout.entity_value([e[k] for k in key_cols])
                keys.append(layout.entity_key(p, entity, value))
                if fmt.fraud:
                    keys.append(layout.fraud_key(p, entity, value))
                args += [cents(e.get(c)) for c in fmt.inputs]  # an optional one: null
                args.append(record_tail(fmt, e) if fmt.texts else txid)
            yield keys, args

    def write_labels(self, labels: Iterable[Mapping[str, object]]
                     ) -> tuple[WriteOutcome, list[str], list[list[tuple[str, str, int]]]]:
        """labels: transaction_id, is_fraud (0/1), label_t (epoch seconds). Returns totals,
        per-label outcomes and, per label, the (entity, value, since) whose events from
        `since` on were stored before the label changed their fraud counts."""
        if self._shards is not None:
            return self._labels_shards(labels)
        # every label's numbers first: one that is not a number stops the call before
        # anything is written
        calls = [([layout.tx_key(self.prefix, lab["transaction_id"])],
                  [self.prefix, int(lab["is_fraud"]),  # type: ignore[call-overload]
                   int(lab["label_t"]),  # type: ignore[call-overload]
                   self._index_ret, *self._fraud_args]) for lab in labels]
        replies = overlapped(self.redis, self._label, calls)
        total, statuses = self._outcomes(r[0] for r in replies)
        anchors = []
        for r in replies:
            flat = r[1]
            anchors.append([(_text(flat[k]), _text(flat[k + 1]), int(flat[k + 2]))
                            for k in range(0, len(flat), 3)])
        return total, statuses, anchors

    def stored_events(self, anchors: Mapping[tuple[str, str], int],
                      until: int | None = None) -> list[dict]:
        """The stored events of these (entity, value)s at or after each one's `since` (and at
        or before `until`), as event dicts (transaction_id, t, keys, values), from the
        transaction index."""
        if not anchors:
            return []
        by_name = {e.name: (e, fmt) for e, fmt, _ in self._formats}
        order = list(anchors.items())
        end = "+inf" if until is None else until
        keys = [layout.entity_key(self.prefix, by_name[name][0], value)
                for (name, value), _since in order]
        if self._shards is not None:
            found = _replies(self._shards.run([
                (slot_of(k), ("ZRANGEBYSCORE", k, since, end))
                for k, (_nv, since) in zip(keys, order, strict=True)]))
        else:
            pipe = self.redis.pipeline(transaction=False)
            for k, (_nv, since) in zip(keys, order, strict=True):
                pipe.zrangebyscore(k, since, end)
            found = pipe.execute()
        txids: dict[str, None] = {}
        for ((name, _value), _since), members in zip(order, found, strict=True):
            fmt = by_name[name][1]
            for m in members:
                txids[m[fmt.fixed_size:].decode().rsplit("\t", 1)[-1]] = None
        return [e for e in self.events(list(txids)) if e is not None]

    def events(self, txids: list[str]) -> list[dict | None]:
        """Each transaction's event as indexed (None when it is not stored)."""
        if not txids:
            return []
        keys = [layout.tx_key(self.prefix, t) for t in txids]
        if self._shards is not None:
            raw = _replies(self._shards.run([(slot_of(k), ("GET", k)) for k in keys]))
        else:
            raw = self.redis.mget(keys)
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

    def _write_shards(self, events: Iterable[Mapping[str, object]], keep: float
                      ) -> tuple[WriteOutcome, list[str], list[bool]]:
        """write_transactions on a Redis Cluster, in three rounds of one pipeline per node:
        1. the index of every event (GET): duplicate or conflict, as the one-call script
           decides (a copy of a transaction earlier in the same call counts as stored);
        2. per event and entity value, write_entity_script (or, for a duplicate, only its
           "late" answer), in the events' order, so one entity value's events apply in the
           order one Redis applies them;
        3. the index of the events written (SET NX), last: an event is in the index only
           once every entity value holds it, so a write retried after any failure finds
           either the index (a duplicate) or its records (skipped per entity value).
        Rounds 2 and 3 wait for a replica of each node (REPLICA_WAIT_MS). Any failure
        raises (a Redis error): the caller retries the same events, which changes nothing
        already written."""
        shards, p = self._shards, self.prefix
        assert shards is not None  # noqa: S101 - only called on a cluster
        cents = layout.cents_of
        rows = []
        for e in events:
            if _DERIVED and not _DERIVED <= e.keys():
                e = _with_derived(e)
            txid = str(e["transaction_id"])
            rows.append((e, txid, layout.content(e if isinstance(e, dict) else dict(e))))
        if not rows:
            return WriteOutcome(), [], []
        xkeys = [layout.tx_key(p, txid) for _e, txid, _c in rows]
        stored = _replies(shards.run([(slot_of(k), ("GET", k)) for k in xkeys]))
        statuses: list[str] = []
        first: dict[str, str] = {}
        for (_e, txid, content), x in zip(rows, stored, strict=True):
            if txid in first:
                statuses.append("duplicate" if first[txid] == content else "conflict")
            elif x is not None:
                statuses.append("duplicate" if _text(x).startswith(content) else "conflict")
            else:
                statuses.append("written")
                first[txid] = content
        calls, owner = [], []
        for i, ((e, txid, _c), status) in enumerate(zip(rows, statuses, strict=True)):
            if status == "conflict":
                continue
            for entity, key_cols, fmt in self._plan:
                value = layout.entity_value([e[k] for k in key_cols])
                keys = [layout.entity_key(p, entity, value)]
                if fmt.fraud:
                    keys.append(layout.fraud_key(p, entity, value))
                args: list[object] = [int(e["t"]), txid, keep,  # type: ignore[call-overload]
                                      int(status == "duplicate")]
                args += [cents(e.get(c)) for c in fmt.inputs]
                args.append(record_tail(fmt, e) if fmt.texts else txid)
                calls.append((slot_of(keys[0]),
                              shards.evalsha(self._entity_tx[entity.name], keys, args)))
                owner.append(i)
        late = [False] * len(rows)
        for i, r in zip(owner, _replies(shards.run(calls, self.REPLICA_WAIT_MS)), strict=True):
            late[i] = late[i] or bool(r[1])
        ttl = max((ret for _e, _f, ret in self._formats), default=0)
        sets = [(slot_of(xkeys[i]), ("SET", xkeys[i], rows[i][2] + "|", "EX", ttl, "NX"))
                for i, st in enumerate(statuses) if st == "written"]
        _replies(shards.run(sets, self.REPLICA_WAIT_MS))
        total, out = self._outcomes(statuses)
        return total, out, late

    def _labels_shards(self, labels: Iterable[Mapping[str, object]]
                       ) -> tuple[WriteOutcome, list[str], list[list[tuple[str, str, int]]]]:
        """write_labels on a Redis Cluster: the index of every label's transaction (GET);
        the decisions of WRITE_LABEL taken here in label order (unknown, before the
        transaction, stale against the index as the earlier labels of the call left it);
        then per label and entity value WRITE_LABEL_ENTITY, and last the index (SET
        KEEPTTL), so a label retried after a failure re-applies to what it had not reached
        and changes nothing it had (each spell change is idempotent)."""
        shards, p = self._shards, self.prefix
        assert shards is not None  # noqa: S101 - only called on a cluster
        labs = list(labels)
        keys = [layout.tx_key(p, lab["transaction_id"]) for lab in labs]
        distinct = list(dict.fromkeys(keys))
        state = dict(zip(distinct, (None if x is None else _text(x) for x in _replies(
            shards.run([(slot_of(k), ("GET", k)) for k in distinct]))), strict=True))
        statuses: list[str] = []
        calls, owner, changed = [], [], {}
        for i, (lab, key) in enumerate(zip(labs, keys, strict=True)):
            x = state[key]
            if x is None:
                statuses.append("unknown_transaction")
                continue
            parts = x.split("|")
            t, lt = int(parts[0]), parts[-2]
            fraud, label_t = int(lab["is_fraud"]), int(lab["label_t"])  # type: ignore[call-overload]
            if label_t < t:
                statuses.append("before_transaction")
                continue
            if lt and int(lt) > label_t:
                statuses.append("stale")
                continue
            statuses.append("written")
            txid = str(lab["transaction_id"])
            for entity, at, ret, delay in self._fraud:
                value = layout.entity_value([parts[k] for k in at])
                ek = [layout.fraud_key(p, entity, value), layout.entity_key(p, entity, value)]
                calls.append((slot_of(ek[0]), shards.evalsha(
                    self._entity_label, ek, [txid, t, fraud, label_t, ret, delay])))
                owner.append((i, entity.name, value))
            state[key] = changed[key] = "|".join(parts[:-2]) + f"|{label_t}|{fraud}"
        anchors: list[list[tuple[str, str, int]]] = [[] for _ in labs]
        for (i, name, value), since in zip(
                owner, _replies(shards.run(calls, self.REPLICA_WAIT_MS)), strict=True):
            if int(since) >= 0:
                anchors[i].append((name, value, int(since)))
        _replies(shards.run([(slot_of(k), ("SET", k, x, "KEEPTTL"))
                             for k, x in changed.items()], self.REPLICA_WAIT_MS))
        total, out = self._outcomes(statuses)
        return total, out, anchors

    @staticmethod
    def _outcomes(replies) -> tuple[WriteOutcome, list[str]]:
        total = WriteOutcome()
        return total, [total.add(r) for r in replies]


def _replies(replies: list) -> list:
    """A cluster round's replies, or its first error raised (the caller retries)."""
    for r in replies:
        if isinstance(r, BaseException):
            raise r
    return replies


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_DERIVED = frozenset(name for fn in DERIVED_FUNCTIONS for name, _ in fn.outputs)


def _with_derived(event: Mapping) -> dict:
    """The event with the columns the repo's udfs derive (transformations/derived.py)."""
    try:
        return {**event, **derive_event(DERIVED_FUNCTIONS, int(event["t"]), event)}
    except DerivedError as exc:
        raise InputError(f"transaction {event.get('transaction_id')}: {exc}") from None
