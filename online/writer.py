"""Event-at-a-time writes to the online state, idempotent and safe for late events.

What the streaming job (and any producer) calls: `write_transactions` and `write_labels`.
Each event is applied by one Lua script, atomically:

* a transaction whose id is already in the transaction index is a duplicate and changes
  nothing, so replaying a batch after a crash is harmless (exactly-once effects);
* a transaction older than others already stored is inserted at its place in time: the
  customer's later cumulative records are rewritten (+1, +cents), which costs the number of
  records after it, bounded by the allowed lateness;
* a label applies only if it is at least as new as the label already known for that
  transaction ("is this write newer"), so reordered or replayed labels converge;
* records older than the retention are trimmed on each write; keys expire after retention.

Each call returns one outcome per event so callers can count and dead-letter what was not
applied (duplicate, unknown transaction, stale label).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from online import layout
from transformations.features import Agg, Entity, windows_for

WRITE_TX = r"""
-- KEYS: customer events, terminal events, transaction index key
-- ARGV: t, txid, terminal, customer, cents, customer retention, terminal retention,
--       keep customer records from, keep terminal records from (a huge number: no floor)
-- returns {status, late}: status written | duplicate | conflict; late = 1 when events of the
-- same customer or terminal at or after t were already stored (their enriched rows, computed
-- before this event arrived, need recomputing)
local c_ev, t_ev, x_key = KEYS[1], KEYS[2], KEYS[3]
local t, txid, term, cust = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local cents, ret_c, ret_t = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function late()
  if redis.call('ZCOUNT', c_ev, t, '+inf') > 1 or redis.call('ZCOUNT', t_ev, t, '+inf') > 1 then
    return 1
  end
  return 0
end
local x = redis.call('GET', x_key)
if x then
  local c0, term0, t0, cents0 = string.match(x, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
  if c0 ~= cust or term0 ~= term or tonumber(t0) ~= t or tonumber(cents0) ~= cents then
    return {'conflict', 0}
  end
  return {'duplicate', late()}
end

-- cumulative record just before this event (the last at or before t)
local n0, s0 = 0, 0
local prev = redis.call('ZREVRANGEBYSCORE', c_ev, t, '-inf', 'LIMIT', 0, 1)
if #prev > 0 then
  n0, s0 = struct.unpack('>I4i8', prev[1])
else
  local first = redis.call('ZRANGE', c_ev, 0, 0)
  if #first > 0 then
    local n, s, a = struct.unpack('>I4i8i8', first[1])
    n0, s0 = n - 1, s - a
  end
end
-- a late event: every later record moves up by one payment and its cents
local later = redis.call('ZRANGEBYSCORE', c_ev, '(' .. t, '+inf', 'WITHSCORES')
for k = 1, #later, 2 do
  local m = later[k]
  local n, s, a = struct.unpack('>I4i8i8', m)
  redis.call('ZREM', c_ev, m)
  redis.call('ZADD', c_ev, later[k + 1],
             struct.pack('>I4i8i8', n + 1, s + cents, a) .. string.sub(m, 21))
end
redis.call('ZADD', c_ev, t, struct.pack('>I4i8i8', n0 + 1, s0 + cents, cents)
           .. term .. '\t' .. txid)
redis.call('ZADD', t_ev, t, txid)

-- trim what no read can need any more: older than the retention behind the entity's newest
-- event, and behind the caller's floor (the stream still reads its batch at older times)
local newest_c = tonumber(redis.call('ZRANGE', c_ev, -1, -1, 'WITHSCORES')[2])
redis.call('ZREMRANGEBYSCORE', c_ev, '-inf', '(' .. math.min(newest_c - ret_c, tonumber(ARGV[8])))
local newest_t = tonumber(redis.call('ZRANGE', t_ev, -1, -1, 'WITHSCORES')[2])
redis.call('ZREMRANGEBYSCORE', t_ev, '-inf', '(' .. math.min(newest_t - ret_t, tonumber(ARGV[9])))
redis.call('EXPIRE', c_ev, ret_c)
redis.call('EXPIRE', t_ev, ret_t)
redis.call('SET', x_key, cust .. '|' .. term .. '|' .. t .. '|' .. cents .. '||', 'EX', ret_t)
return {'written', late()}
"""

WRITE_LABEL = r"""
-- KEYS: transaction index key; ARGV: prefix, is_fraud, label time, terminal retention,
-- label delay of the fraud-rate windows
-- returns {status, terminal, since}: when the label changed the terminal's fraud set and
-- transactions of that terminal at or after `since` are already stored, their enriched rows
-- (computed without this label) need recomputing; otherwise terminal is ''
local x = redis.call('GET', KEYS[1])
if not x then return {'unknown_transaction', '', 0} end
local c, term, t, cents, lt, f =
  string.match(x, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
local fraud, label_t = ARGV[2], tonumber(ARGV[3])
if label_t < tonumber(t) then return {'before_transaction', '', 0} end
if lt ~= '' and tonumber(lt) > label_t then return {'stale', '', 0} end
local txid = string.sub(KEYS[1], #ARGV[1] + 4)
local fraud_key = ARGV[1] .. ':t:' .. term .. ':fraud'
local changed
if fraud == '1' then
  changed = redis.call('ZADD', fraud_key, t, txid)
  redis.call('EXPIRE', fraud_key, ARGV[4])
else
  changed = redis.call('ZREM', fraud_key, txid)
end
redis.call('SET', KEYS[1], c .. '|' .. term .. '|' .. t .. '|' .. cents .. '|' .. label_t
           .. '|' .. fraud, 'KEEPTTL')
if changed == 1 then
  local since = math.max(label_t, tonumber(t) + tonumber(ARGV[5]))
  if redis.call('ZCOUNT', ARGV[1] .. ':t:' .. term .. ':ev', since, '+inf') > 0 then
    return {'written', term, since}
  end
end
return {'written', '', 0}
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


class OnlineWriter:
    def __init__(self, redis_conn, prefix: str = "ffs"):
        self.redis, self.prefix = redis_conn, prefix
        self._tx = redis_conn.register_script(WRITE_TX)
        self._label = redis_conn.register_script(WRITE_LABEL)
        self._ret_c = layout.retention_s(Entity.CUSTOMER)
        self._ret_t = layout.retention_s(Entity.TERMINAL)
        delays = [w.delay_s for w in windows_for(Entity.TERMINAL) if w.agg is Agg.FRAUD_RATE]
        self._label_delay = min(delays) if delays else 0

    def write_transactions(self, events: Iterable[Mapping[str, object]],
                           reads_from: int | None = None, trim: bool = True
                           ) -> tuple[WriteOutcome, list[str], list[bool]]:
        """events: transaction_id, customer_id, terminal_id, t (epoch seconds), amount.
        Pipelined; each event is one atomic script call. Returns totals, per-event outcomes
        and per-event "late" flags (events of its customer or terminal at or after it were
        already stored).

        reads_from: the oldest request time the caller will still read at (the stream reads
        each batch at its events' own times, which can be days behind the newest event of a
        backlog); records that such a read needs are not trimmed. trim=False keeps all."""
        if not trim:
            keep_c = keep_t = -1e18
        elif reads_from is None:
            keep_c = keep_t = 1e18
        else:
            keep_c, keep_t = reads_from - self._ret_c, reads_from - self._ret_t
        p = self.prefix
        pipe = self.redis.pipeline(transaction=False)
        for e in events:
            cid, tid, txid = e["customer_id"], e["terminal_id"], e["transaction_id"]
            self._tx(keys=[layout.customer_key(p, cid), layout.terminal_keys(p, tid)[0],
                           layout.tx_key(p, txid)],
                     args=[int(e["t"]), str(txid), str(tid), str(cid),  # type: ignore[call-overload]
                           int(layout.to_cents(float(e["amount"]))),  # type: ignore[arg-type]
                           self._ret_c, self._ret_t,
                           keep_c, keep_t],
                     client=pipe)
        replies = pipe.execute()
        total, statuses = self._outcomes(r[0] for r in replies)
        return total, statuses, [bool(r[1]) for r in replies]

    def write_labels(self, labels: Iterable[Mapping[str, object]]
                     ) -> tuple[WriteOutcome, list[str], list[tuple[str, int] | None]]:
        """labels: transaction_id, is_fraud (0/1), label_t (epoch seconds). Returns totals,
        per-label outcomes and, per label, (terminal, since) when transactions of that terminal
        from `since` on were stored before the label changed their fraud counts."""
        pipe = self.redis.pipeline(transaction=False)
        for lab in labels:
            self._label(keys=[layout.tx_key(self.prefix, lab["transaction_id"])],
                        args=[self.prefix, int(lab["is_fraud"]),  # type: ignore[call-overload]
                              int(lab["label_t"]),  # type: ignore[call-overload]
                              self._ret_t, self._label_delay], client=pipe)
        replies = pipe.execute()
        total, statuses = self._outcomes(r[0] for r in replies)
        return total, statuses, [(_text(r[1]), int(r[2])) if r[1] else None for r in replies]

    @staticmethod
    def _outcomes(replies) -> tuple[WriteOutcome, list[str]]:
        total = WriteOutcome()
        return total, [total.add(r) for r in replies]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
