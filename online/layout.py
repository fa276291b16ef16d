"""Online state in Redis: key names and member encodings (pure functions, no I/O).

One sorted set per entity value, for every entity of the repo (a composite entity's value is
its ids joined by ","):

    {p}:{<entity>:<value>}:ev     score = event time (s), member = the event's record
    {p}:{<entity>:<value>}:fraud  score = event time, member = "txid<tab>from<tab>until": one
                                  per spell during which the transaction was labelled fraud,
                                  from that label's time until a later label said genuine
                                  (empty: still fraud); entities with fraud rates only;
                                  plus one summary member (fraud_summary) at score -1e13
    {p}:x:{txid}                  "t|<keys>|<values>|label time|is_fraud": what a label that
                                  arrives later needs to find the entities it changes

The braces are Redis Cluster hash tags: the keys of one entity value live in one slot, so
one script can read all of its windows on any node.

A record holds what the entity's features read, and nothing more (RecordFormat):

    >I   cumulative count (this event included)          only with cumulative columns
    per cumulative column (sum, mean, std): >q  cumulative sum of hundredths
                                            >d  cumulative sum of squared hundredths (std)
    per column whose own value a read takes (min, max, last): >q  this event's value in
                                 hundredths (an optional column's null: NULL_CENTS, the
                                 smallest int64)
    then the text columns counted distinct, each followed by a tab, then the transaction id

A column only summed keeps no value of its own: a window reads cumulative parts only, a late
event adds its own value (from its write's arguments) to the later records, and the base of
the oldest record (what an edge older than every record reads) needs none either: trimming
keeps the newest second older than the cutoff (the last records a trim would drop), so an
edge before the records still read is the cumulative part of that second's last record, as
exact as before; an entity value's oldest record with count 1 has nothing before it (base 0).

Why cumulative members: a window (t - W, t] is "cumulative at t minus cumulative at t - W",
and "the member with the greatest score <= x" is one O(log n) ZREVRANGEBYSCORE ... LIMIT 0 1.
Big-endian counts first make members with equal scores sort by their count, so the last one
of a second is the one with everything in that second. An entity with no sums keeps no
cumulative part: its counts are ZCOUNTs, and a late event never rewrites later records.

Why spells: a read at t counts a fraud label only if it was known at t (label time <= t) and
not yet revised, exactly as the training set does, whatever order labels and transactions
were written in. So a read at a past time (a transaction that arrives late, on a partition
behind the others) never sees a label from its future.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ffs.transformations.declarations import (
    CENTS,
    KEY_SEPARATOR,
    NULL_CENTS,
    Agg,
    Entity,
    to_cents,
)
from ffs.transformations.features import (
    ENTITIES,
    KEY_COLUMNS,
    VALUE_COLUMNS,
    recency_for,
    windows_for,
)

__all__ = ["CENTS", "RecordFormat", "entity_key", "fraud_key", "tx_key", "entity_value",
           "retention_s", "index_retention_s", "encode_tx", "decode_tx", "to_cents",
           "record_format"]

# Events are kept this long beyond the longest window, so that re-scoring a transaction up to
# a day older than the newest event (replays, retried requests) still sees whole windows.
REPLAY_MARGIN_S = 86400
_CUMULATIVE = (Agg.SUM, Agg.MEAN, Agg.STD)


def entity_value(ids: tuple | list) -> str:
    """An entity value's text: its canonical ids, joined (composite keys)."""
    return KEY_SEPARATOR.join(str(i) for i in ids)


def entity_key(prefix: str, entity: Entity, value: str) -> str:
    return f"{prefix}:{{{entity.name}:{value}}}:ev"


def fraud_key(prefix: str, entity: Entity, value: str) -> str:
    return f"{prefix}:{{{entity.name}:{value}}}:fraud"


def tx_key(prefix: str, transaction_id: object) -> str:
    return f"{prefix}:x:{transaction_id}"


def retention_s(entity: Entity) -> int:
    """How long an event stays in the entity's state: longest window + delay + margin."""
    spans = [f.window_s + f.delay_s for f in windows_for(entity)]
    spans += [r.horizon_s for r in recency_for(entity)]
    return max(spans, default=0) + REPLAY_MARGIN_S


def index_retention_s() -> int:
    """How long a transaction stays indexed: as long as any entity keeps its event."""
    return max((retention_s(e) for e in ENTITIES), default=REPLAY_MARGIN_S)


@dataclass(frozen=True)
class RecordFormat:
    """What one entity's records hold (see the module docstring)."""

    cumulative: tuple[str, ...]  # numeric columns summed (sum, mean, std), in order
    squares: tuple[bool, ...]  # per cumulative column: its squares are summed too (std)
    numbers: tuple[str, ...]  # numeric columns whose per-event value is kept (min/max/last)
    texts: tuple[str, ...]  # columns counted distinct, kept as text
    fraud: bool  # the entity has fraud rates (a fraud set, labels change it)

    @property
    def has_count(self) -> bool:
        return bool(self.cumulative)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The event's numbers a write takes (hundredths, in this order): the cumulative
        columns, then the other numbers the record keeps."""
        return tuple(dict.fromkeys(self.cumulative + self.numbers))

    @property
    def cum_struct(self) -> str:
        """The record's cumulative part (count, sums, squares), as Lua's struct reads it."""
        return ">" + ("I4" if self.has_count else "") + "".join(
            "i8d" if sq else "i8" for sq in self.squares)

    @property
    def cum_size(self) -> int:
        return (4 if self.has_count else 0) + sum(16 if sq else 8 for sq in self.squares)

    @property
    def struct(self) -> str:
        """The record's fixed part, as Lua's struct and Python's struct both read it."""
        parts = ["I4"] if self.has_count else []
        for sq in self.squares:
            parts += ["i8", "d"] if sq else ["i8"]
        parts += ["i8"] * len(self.numbers)
        return ">" + "".join(parts)

    @property
    def fixed_size(self) -> int:
        return struct.calcsize(self.struct.replace("I4", "I").replace("i8", "q"))


def record_format(entity: Entity) -> RecordFormat:
    feats = windows_for(entity)
    cum = list(dict.fromkeys(str(f.column) for f in feats if f.agg in _CUMULATIVE))
    squares = tuple(any(f.agg is Agg.STD and f.column == c for f in feats) for c in cum)
    # a per-event value only where a read takes it: sums, means and stds read cumulative
    # parts (see the module docstring: why the base needs no own value)
    numbers = [str(f.column) for f in feats if f.agg in (Agg.MIN, Agg.MAX, Agg.LAST)]
    texts = tuple(dict.fromkeys(str(f.column) for f in feats if f.agg is Agg.COUNT_DISTINCT))
    return RecordFormat(tuple(cum), squares, tuple(dict.fromkeys(numbers)), texts,
                        any(f.agg is Agg.FRAUD_RATE for f in feats))


def cents_of(value: object) -> int:
    """to_cents of one value, without NumPy's per-call cost (the writer's hot path): the same
    double times CENTS, rounded half to even as np.rint rounds; a null is NULL_CENTS."""
    if value is None or value != value:  # an optional column's null (None or NaN)
        return NULL_CENTS
    return int(round(float(value) * CENTS))  # type: ignore[arg-type]


def text_of(column: str, value: object) -> str:
    """A distinct-counted column's value as stored: numbers as their hundredths."""
    if VALUE_COLUMNS.get(column) == "number":
        return str(cents_of(value))
    return str(value)


def encode_tx(event: dict[str, Any], label_t: int | None = None,
              is_fraud: int | None = None) -> str:
    """The transaction index's value for an event (transaction_id, t, keys, values)."""
    return content(event) + ("" if label_t is None else str(label_t)) + "|" + (
        "" if is_fraud is None else str(is_fraud))


def content(event: dict[str, Any]) -> str:
    """What two copies of one transaction must agree on: "t|keys|values|"."""
    parts = [str(int(event["t"]))] + [str(event[k]) for k in KEY_COLUMNS]
    for col, kind in VALUE_COLUMNS.items():
        value = event.get(col)
        if kind != "number":
            parts.append(str(value))
        else:  # an optional column's null is empty
            parts.append("" if value is None or value != value else str(cents_of(value)))
    return "|".join(parts) + "|"


def decode_tx(value: bytes | str) -> dict[str, Any]:
    """encode_tx's inverse: an event dict (numbers as floats), label_t and is_fraud."""
    text = value.decode() if isinstance(value, bytes) else value
    parts = text.split("|")
    out: dict[str, Any] = {"t": int(parts[0])}
    i = 1
    for k in KEY_COLUMNS:
        out[k] = parts[i]
        i += 1
    for col, kind in VALUE_COLUMNS.items():
        if kind != "number":
            out[col] = parts[i]
        else:
            out[col] = int(parts[i]) / CENTS if parts[i] else None
        i += 1
    out["label_t"] = int(parts[i]) if parts[i] else None
    out["is_fraud"] = int(parts[i + 1]) if parts[i + 1] else None
    return out


FRAUD_SUMMARY_SCORE = -1e13  # below every event time and window edge: never in a window


def fraud_summary(spells: list[str]) -> str:
    """The fraud set's summary member: the newest open spell's start and how many spells
    were revised. A read at t with none revised and the newest start <= t counts the window
    with one ZCOUNT (every spell in it is open and known at t); otherwise it reads them."""
    open_starts = [int(m.split("\t")[1]) for m in spells if m.endswith("\t")]
    revised = sum(1 for m in spells if not m.endswith("\t"))
    return f"#summary\t{max(open_starts, default=0)}\t{revised}"


def fraud_spells(txid: str, labels: list[tuple[int, int]]) -> list[str]:
    """The fraud-set members of one transaction from its labels [(label time, is_fraud)] in
    time order: a spell opens at a fraud label that follows a non-fraud state and closes at
    the next genuine one."""
    out, start = [], None
    for label_t, fraud in labels:
        if fraud and start is None:
            start = label_t
        elif not fraud and start is not None:
            if label_t > start:
                out.append(f"{txid}\t{start}\t{label_t}")
            start = None
    if start is not None:
        out.append(f"{txid}\t{start}\t")
    return out
