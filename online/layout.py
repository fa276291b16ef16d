"""Online state in Redis: key names and member encodings (pure functions, no I/O).

Per customer (retention = 30 days, the longest customer window):
    {p}:c:{id}:ev    sorted set, score = event time (s), member = cumulative record:
                     >I  cumulative count (this event included)   4 bytes, big-endian
                     >q  cumulative amount in cents (included)     8 bytes
                     >q  this event's amount in cents              8 bytes
                     terminal id, a tab, transaction id (utf-8)
Per terminal (retention = 37 days, longest window + label delay):
    {p}:t:{id}:ev    sorted set, member = transaction id, score = event time
    {p}:t:{id}:fraud sorted set, member = transaction id, score = event time, for transactions
                     whose latest label says fraud
Per transaction (retention = 37 days), for labels that arrive later:
    {p}:x:{txid}     string "customer|terminal|event time|cents|label time|is_fraud"
                     (the last two empty while no label is known)

Why cumulative members: a window (t - W, t] is "cumulative at t minus cumulative at t - W",
and "the member with the greatest score <= x" is one O(log n) ZREVRANGEBYSCORE ... LIMIT 0 1.
Big-endian counts first make members with equal scores sort by their count, so the last one
of a second is the one with everything in that second. Every read is a fixed number of
O(log n) lookups, whatever the entity's volume (a terminal with 100,000 payments a day reads
as fast as a quiet one), and values are exact to the second and to the cent.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from transformations.features import RECENCY_FEATURES, Entity, windows_for

RECORD = struct.Struct(">Iqq")
CENTS = 100


def key(prefix: str, kind: str, entity_id: object, part: str) -> str:
    return f"{prefix}:{kind}:{entity_id}:{part}"


def customer_key(prefix: str, customer_id: object) -> str:
    return key(prefix, "c", customer_id, "ev")


def terminal_keys(prefix: str, terminal_id: object) -> tuple[str, str]:
    return key(prefix, "t", terminal_id, "ev"), key(prefix, "t", terminal_id, "fraud")


def tx_key(prefix: str, transaction_id: object) -> str:
    return f"{prefix}:x:{transaction_id}"


# Events are kept this long beyond the longest window, so that re-scoring a transaction up to
# a day older than the newest event (replays, retried requests) still sees whole windows.
REPLAY_MARGIN_S = 86400


def retention_s(entity: Entity) -> int:
    """How long an event stays in the online state: longest window + delay + margin."""
    spans = [f.window_s + f.delay_s for f in windows_for(entity)]
    spans += [r.horizon_s for r in RECENCY_FEATURES if r.entity == entity]
    return max(spans) + REPLAY_MARGIN_S


def encode_record(cum_count: int, cum_cents: int, cents: int, terminal_id: object,
                  transaction_id: object) -> bytes:
    return RECORD.pack(cum_count, cum_cents, cents) + f"{terminal_id}\t{transaction_id}".encode()


def decode_record(member: bytes) -> tuple[int, int, int, str, str]:
    cum_count, cum_cents, cents = RECORD.unpack_from(member)
    terminal, txid = member[RECORD.size:].decode().split("\t", 1)
    return cum_count, cum_cents, cents, terminal, txid


def encode_records(cum_count: np.ndarray, cum_cents: np.ndarray, cents: np.ndarray,
                   terminal_ids: np.ndarray, transaction_ids: np.ndarray) -> list[bytes]:
    """Vectorised encode_record for bulk loads."""
    fixed = np.empty(len(cum_count), dtype=[("n", ">u4"), ("s", ">i8"), ("a", ">i8")])
    fixed["n"], fixed["s"], fixed["a"] = cum_count, cum_cents, cents
    raw = fixed.tobytes()
    size = RECORD.size
    return [raw[i * size:(i + 1) * size] + f"{k}\t{t}".encode()
            for i, (k, t) in enumerate(zip(terminal_ids.tolist(), transaction_ids.tolist(),
                                           strict=False))]


def to_cents(amount: float | np.ndarray):
    return np.rint(np.asarray(amount, dtype=np.float64) * CENTS).astype(np.int64)


def encode_tx(customer_id: object, terminal_id: object, t: int, cents: int,
              label_t: int | None = None, is_fraud: int | None = None) -> str:
    lab = "" if label_t is None else str(label_t)
    fr = "" if is_fraud is None else str(is_fraud)
    return f"{customer_id}|{terminal_id}|{t}|{cents}|{lab}|{fr}"


def decode_tx(value: bytes | str) -> dict[str, Any]:
    text = value.decode() if isinstance(value, bytes) else value
    c, t_id, t, cents, lab, fr = text.split("|")
    return {"customer_id": c, "terminal_id": t_id, "t": int(t), "cents": int(cents),
            "label_t": int(lab) if lab else None, "is_fraud": int(fr) if fr else None}
