"""Which stream events count, decided by the events alone, never by micro-batch boundaries:
the stream (jobs/stream/batch.py) applies these rules as it goes, and `ffs consistency`
applies them to the whole topics to check that the stream did.

- Lateness and retention: each topic partition is read in offset order, and an event is judged
  against the newest event time accepted before it *on its own partition* (a Kafka partition
  is a log with one order; partitions are not ordered with each other). More than
  `stream.allowed_lateness_s` behind it is too late; as old as the online retention behind it
  is beyond retention. A partition's first event has nothing to be late against.
- Copies of one transaction_id: the first copy in its partition's log wins; between copies on
  different partitions (different keys: a producer bug), the one with the older Kafka
  timestamp, then the lower partition. A copy with other content than the winner is a
  conflicting duplicate; an identical one an ordinary duplicate.
- A label stamped before its transaction is refused (the batch loader's rule too).

Only the wall-clock rule (an event more than `stream.max_future_s` after the clock when it
was read) depends on when the stream ran.
"""

from __future__ import annotations

from ffs.bus import messages as M
from ffs.online import layout
from ffs.transformations.declarations import Agg
from ffs.transformations.features import ENTITIES, windows_for


def retentions() -> tuple[int, int]:
    """(transactions, labels) retention in seconds: an event older than an entity's
    retention cannot be placed in that entity's state (its history is trimmed), so
    transactions are judged by the shortest retention of all entities, labels by the
    shortest of the entities with fraud rates."""
    rets = {e: layout.retention_s(e) for e in ENTITIES}
    fraud = [rets[e] for e in ENTITIES if any(f.agg is Agg.FRAUD_RATE for f in windows_for(e))]
    fallback = layout.index_retention_s()
    return min(rets.values(), default=fallback), min(fraud, default=fallback)


def log_order(topics: list, partitions: list, offsets: list) -> list[int]:
    """Indices of a batch's rows in log order: by topic, partition, then offset."""
    return sorted(range(len(offsets)), key=lambda i: (topics[i], partitions[i], offsets[i]))


def judge_time(t: int, newest: int | None, allowed_lateness_s: int,
               retention_s: int) -> tuple[str, str] | None:
    """(reason, detail) when the event at t is refused against its partition's newest
    accepted event time before it; None when it counts."""
    if newest is None:
        return None
    if t <= newest - retention_s:
        return M.BEYOND_RETENTION, (f"{M.iso(t)} is older than the online retention "
                                    f"({retention_s // 86400} d) behind its partition's newest "
                                    f"event {M.iso(newest)}")
    if t < newest - allowed_lateness_s:
        return M.TOO_LATE, (f"{M.iso(t)} is {newest - t} s behind its partition's newest event "
                            f"{M.iso(newest)}; allowed lateness is {allowed_lateness_s} s")
    return None


def first_copy(copies: list[tuple[int, int, int | None]]) -> int:
    """Of copies (partition, offset, kafka_timestamp_ms) of one transaction_id, the index
    of the one that wins."""
    firsts: dict[int, int] = {}
    for i, (part, off, _ts) in enumerate(copies):
        if part not in firsts or off < copies[firsts[part]][1]:
            firsts[part] = i
    return min(firsts.values(), key=lambda i: (copies[i][2] or 0, copies[i][0]))
