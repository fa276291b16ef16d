"""`ffs materialize`: load the online state from the offline store's events.

The state is what online reads need for any request time at or after the newest event: for
each entity, the events still inside its longest window (+ label delay). Each entity's keys
are replaced inside one MULTI/EXEC with the whole entity, so loading twice gives the same
state (idempotent) and a reader never sees an entity half written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from online import layout
from transformations import timestamps as T
from transformations.features import Entity

CHUNK = 500  # entities per MULTI/EXEC


@dataclass
class LoadSummary:
    customers: int
    terminals: int
    customer_events: int
    terminal_events: int
    frauds: int
    transactions_indexed: int
    as_of: int
    seconds: float


def current_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """The latest label of each transaction (a revision replaces the earlier label)."""
    if labels.empty:
        return labels
    return labels.sort_values(["transaction_id", "label_timestamp"]).drop_duplicates(
        "transaction_id", keep="last")


def load_state(redis_conn, tx: pd.DataFrame, labels: pd.DataFrame, prefix: str = "ffs",
               log: Callable[[str], None] = lambda _: None,
               index_transactions: bool = True) -> LoadSummary:
    started = time.perf_counter()
    ts = T.to_seconds(tx["event_timestamp"])
    newest = int(ts.max()) if len(ts) else 0
    lab = current_labels(labels)
    if len(lab):
        newest = max(newest, int(T.to_seconds(lab["label_timestamp"]).max()))
    ret_c, ret_t = layout.retention_s(Entity.CUSTOMER), layout.retention_s(Entity.TERMINAL)
    frame = pd.DataFrame({"transaction_id": tx["transaction_id"].to_numpy(),
                          "customer_id": tx["customer_id"].to_numpy(),
                          "terminal_id": tx["terminal_id"].to_numpy(), "t": ts,
                          "cents": layout.to_cents(tx["amount"].to_numpy())})

    cust = frame[frame["t"] > newest - ret_c].sort_values(["customer_id", "t", "transaction_id"])
    groups = cust.groupby("customer_id", sort=False)
    cust = cust.assign(n=groups.cumcount().to_numpy() + 1,
                       s=groups["cents"].cumsum().to_numpy())
    members = layout.encode_records(cust["n"].to_numpy(), cust["s"].to_numpy(),
                                    cust["cents"].to_numpy(), cust["terminal_id"].to_numpy(),
                                    cust["transaction_id"].to_numpy())
    cust = cust.assign(member=members)

    term = frame[frame["t"] > newest - ret_t]
    fraud_ids = set(lab.loc[lab["is_fraud"] == 1, "transaction_id"].tolist()) if len(lab) else set()
    frauds = term[term["transaction_id"].isin(fraud_ids)]

    _write_customers(redis_conn, prefix, cust, ret_c, log)
    _write_terminals(redis_conn, prefix, term, frauds, ret_t, log)
    indexed = 0
    if index_transactions:
        indexed = _write_tx_index(redis_conn, prefix, term, lab, ret_t)
    return LoadSummary(customers=cust["customer_id"].nunique(),
                       terminals=term["terminal_id"].nunique(), customer_events=len(cust),
                       terminal_events=len(term), frauds=len(frauds),
                       transactions_indexed=indexed, as_of=newest,
                       seconds=time.perf_counter() - started)


def _groups(entity: np.ndarray, *columns: np.ndarray):
    """(entity id, slices of each column) per entity, from one stable sort: per-group pandas
    indexing cost more than the whole Redis write."""
    order = np.argsort(entity, kind="stable")
    entity = entity[order]
    cols = [c[order] for c in columns]
    bounds = np.flatnonzero(entity[1:] != entity[:-1]) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(entity)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        first = entity[lo]  # a NumPy scalar for integer ids, a str for string ids
        yield (first.item() if isinstance(first, np.generic) else first), [c[lo:hi] for c in cols]


def _interleave(scores: np.ndarray, members: list) -> list:
    out: list = [None] * (2 * len(members))
    out[0::2] = scores.tolist()
    out[1::2] = members
    return out


def _write_customers(r, prefix, cust, ttl, log) -> None:
    members = np.empty(len(cust), dtype=object)
    members[:] = cust["member"].tolist()
    groups = _groups(cust["customer_id"].to_numpy(), cust["t"].to_numpy(), members)
    pipe, n = r.pipeline(transaction=True), 0
    for cid, (times, recs) in groups:
        ev_key = layout.customer_key(prefix, cid)
        pipe.delete(ev_key)
        pipe.execute_command("ZADD", ev_key, *_interleave(times, recs.tolist()))
        pipe.expire(ev_key, ttl)
        n += 1
        if n % CHUNK == 0:
            pipe.execute()
    pipe.execute()
    log(f"  customers: {n:,} entities, {len(cust):,} events")


def _write_terminals(r, prefix, term, frauds, ttl, log) -> None:
    fraud_ids = set(frauds["transaction_id"].tolist())
    ids = term["transaction_id"].astype(str).to_numpy(dtype=object)
    is_fraud = term["transaction_id"].isin(fraud_ids).to_numpy()
    groups = _groups(term["terminal_id"].to_numpy(), term["t"].to_numpy(), ids, is_fraud)
    pipe, n = r.pipeline(transaction=True), 0
    for tid, (times, txids, fraud) in groups:
        ev_key, fraud_key = layout.terminal_keys(prefix, tid)
        pipe.delete(ev_key, fraud_key)
        pipe.execute_command("ZADD", ev_key, *_interleave(times, txids.tolist()))
        pipe.expire(ev_key, ttl)
        if fraud.any():
            pipe.execute_command("ZADD", fraud_key, *_interleave(times[fraud],
                                                                 txids[fraud].tolist()))
            pipe.expire(fraud_key, ttl)
        n += 1
        if n % CHUNK == 0:
            pipe.execute()
    pipe.execute()
    log(f"  terminals: {n:,} entities, {len(term):,} events, {len(frauds):,} frauds")


_BULK_SET = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1]) end
return #KEYS
"""


def _write_tx_index(r, prefix, term, lab, ttl) -> int:
    """transaction id -> "customer|terminal|time|cents|label time|is_fraud": what a label that
    arrives later needs to find the windows it changes (layout.encode_tx / decode_tx)."""
    df = term[["transaction_id", "customer_id", "terminal_id", "t", "cents"]]
    if len(lab):
        cur = pd.DataFrame({"transaction_id": lab["transaction_id"].to_numpy(),
                            "l": T.to_seconds(lab["label_timestamp"]),
                            "f": lab["is_fraud"].to_numpy()})
        df = df.merge(cur, on="transaction_id", how="left")
    else:
        df = df.assign(l=np.nan, f=np.nan)
    label = (df["l"].astype("Int64").astype("string").fillna("") + "|"
             + df["f"].astype("Int64").astype("string").fillna(""))
    values = (df["customer_id"].astype("string") + "|" + df["terminal_id"].astype("string") + "|"
              + df["t"].astype("string") + "|" + df["cents"].astype("string") + "|" + label)
    keys = (prefix + ":x:" + df["transaction_id"].astype("string")).tolist()
    values = values.tolist()
    # One script call per 5,000 keys: SET with EX per key, without 2 commands per key on the wire.
    script = r.register_script(_BULK_SET)
    step = 5000
    for lo in range(0, len(keys), step):
        script(keys=keys[lo:lo + step], args=[ttl, *values[lo:lo + step]])
    return len(keys)
