"""`ffs materialize`: load the online state from the offline store's events.

The state is what online reads need for any request time at or after the newest event: for
each entity, the events still inside its longest window (+ label delay). Each entity's keys
are replaced inside one MULTI/EXEC with the whole entity, so loading twice gives the same
state (idempotent) and a reader never sees an entity half written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ffs.online import layout
from ffs.online.layout import RecordFormat
from ffs.online.writer import record_tail
from ffs.transformations import timestamps as T
from ffs.transformations.features import ENTITIES, KEY_COLUMNS, VALUE_COLUMNS

CHUNK = 500  # entities per MULTI/EXEC


@dataclass
class LoadSummary:
    entities: dict[str, int] = field(default_factory=dict)  # entity -> values loaded
    events: dict[str, int] = field(default_factory=dict)  # entity -> events loaded
    frauds: int = 0
    transactions_indexed: int = 0
    as_of: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """"4,990 customer (1,754,155 events), 10,000 terminal (...)"."""
        return ", ".join(f"{n:,} {name} ({self.events[name]:,} events)"
                         for name, n in self.entities.items())


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
    frame = pd.DataFrame({"transaction_id": tx["transaction_id"].to_numpy(), "t": ts,
                          **{k: tx[k].to_numpy() for k in KEY_COLUMNS},
                          **{c: tx[c].to_numpy() for c in VALUE_COLUMNS}})
    spells = _spells(labels)
    summary = LoadSummary(as_of=newest)
    for entity in ENTITIES:
        fmt = layout.record_format(entity)
        ret = layout.retention_s(entity)
        part = frame[frame["t"] > newest - ret]
        n_values, n_frauds = _write_entity(redis_conn, prefix, entity, fmt, part, spells, ret)
        summary.entities[entity.name], summary.events[entity.name] = n_values, len(part)
        summary.frauds += n_frauds
        log(f"  {entity.name}: {n_values:,} entities, {len(part):,} events"
            + (f", {n_frauds:,} frauds" if fmt.fraud else ""))
    if index_transactions:
        kept = frame[frame["t"] > newest - layout.index_retention_s()]
        summary.transactions_indexed = _write_tx_index(redis_conn, prefix, kept, lab,
                                                       layout.index_retention_s())
    summary.seconds = time.perf_counter() - started
    return summary


def _spells(labels: pd.DataFrame) -> pd.DataFrame:
    """(transaction_id, member) of every fraud spell (layout.fraud_spells), from each
    transaction's whole label history: only transactions ever labelled fraud have any."""
    if labels.empty:
        return pd.DataFrame({"transaction_id": [], "member": []})
    ever = labels.loc[labels["is_fraud"].to_numpy() == 1, "transaction_id"].unique()
    hist = labels[labels["transaction_id"].isin(ever)].assign(
        l=lambda d: T.to_seconds(d["label_timestamp"])).sort_values(["transaction_id", "l"])
    rows = []
    for txid, group in hist.groupby("transaction_id", sort=False):
        pairs = list(zip(group["l"].tolist(), group["is_fraud"].astype(int).tolist(),
                         strict=True))
        rows += [(txid, m) for m in layout.fraud_spells(str(txid), pairs)]
    return pd.DataFrame(rows, columns=["transaction_id", "member"])


def _values(entity, part: pd.DataFrame) -> np.ndarray:
    """Each row's entity value text (layout.entity_value), vectorised."""
    cols = [part[k].astype(str).to_numpy(dtype=object) for k in entity.keys]
    if len(cols) == 1:
        return cols[0]
    out = cols[0]
    for c in cols[1:]:
        out = out + "," + c
    return out


def _members(fmt: RecordFormat, part: pd.DataFrame, value: np.ndarray) -> list[bytes]:
    """Every row's record (online/layout.py), in the order of `part` sorted by (value, t)."""
    n = len(part)
    dtype: list[tuple[str, str]] = []
    cols: dict[str, np.ndarray] = {}
    cents = {c: layout.to_cents(part[c].to_numpy(dtype=np.float64)) for c in fmt.numbers}
    if fmt.has_count:
        groups = pd.Series(value).groupby(value, sort=False)
        dtype.append(("n", ">u4"))
        cols["n"] = groups.cumcount().to_numpy() + 1
        for k, (col, sq) in enumerate(zip(fmt.cumulative, fmt.squares, strict=True)):
            s = pd.Series(cents[col]).groupby(value, sort=False).cumsum().to_numpy()
            dtype.append((f"s{k}", ">i8"))
            cols[f"s{k}"] = s
            if sq:
                q = pd.Series(cents[col].astype(np.float64) ** 2).groupby(
                    value, sort=False).cumsum().to_numpy()
                dtype.append((f"q{k}", ">f8"))
                cols[f"q{k}"] = q
    for k, col in enumerate(fmt.numbers):
        dtype.append((f"v{k}", ">i8"))
        cols[f"v{k}"] = cents[col]
    tails = [record_tail(fmt, row) for row in _rows(part, fmt)]
    if not dtype:
        return [t.encode() for t in tails]
    fixed = np.empty(n, dtype=dtype)
    for name, values in cols.items():
        fixed[name] = values
    raw = fixed.tobytes()
    size = fixed.dtype.itemsize
    return [raw[i * size:(i + 1) * size] + tails[i].encode() for i in range(n)]


def _rows(part: pd.DataFrame, fmt: RecordFormat):
    cols = ["transaction_id", *fmt.texts]
    data = {c: part[c].tolist() for c in cols}
    for i in range(len(part)):
        yield {c: data[c][i] for c in cols}


def _write_entity(r, prefix, entity, fmt: RecordFormat, part: pd.DataFrame,
                  spells: pd.DataFrame, ttl: int) -> tuple[int, int]:
    value = _values(entity, part)
    order = np.lexsort((part["transaction_id"].astype(str).to_numpy(), part["t"].to_numpy(),
                        value.astype(str)))
    part = part.iloc[order]
    value = value[order]
    members = np.empty(len(part), dtype=object)
    members[:] = _members(fmt, part, value)
    frauds: dict[str, list] = {}
    if fmt.fraud and len(spells):
        hit = pd.DataFrame({"transaction_id": part["transaction_id"].to_numpy(),
                            "t": part["t"].to_numpy(), "value": value}).merge(
            spells, on="transaction_id", how="inner")
        for v, group in hit.groupby("value", sort=False):
            spells = group["member"].tolist()
            frauds[str(v)] = [*_interleave(group["t"].to_numpy(), spells),
                              layout.FRAUD_SUMMARY_SCORE, layout.fraud_summary(spells)]
    groups = _groups(value, part["t"].to_numpy(), members)
    pipe, n = r.pipeline(transaction=True), 0
    for v, (times, recs) in groups:
        ev_key, fr_key = layout.entity_key(prefix, entity, v), layout.fraud_key(prefix, entity, v)
        pipe.delete(ev_key, fr_key)
        pipe.execute_command("ZADD", ev_key, *_interleave(times, recs.tolist()))
        pipe.expire(ev_key, ttl)
        if v in frauds:
            pipe.execute_command("ZADD", fr_key, *frauds[v])
            pipe.expire(fr_key, ttl)
        n += 1
        if n % CHUNK == 0:
            pipe.execute()
    pipe.execute()
    return n, sum(len(f) // 2 - 1 for f in frauds.values())


def _groups(entity: np.ndarray, *columns: np.ndarray):
    """(entity value, slices of each column) per entity, from one stable sort: per-group
    pandas indexing cost more than the whole Redis write."""
    order = np.argsort(entity, kind="stable")
    entity = entity[order]
    cols = [c[order] for c in columns]
    bounds = np.flatnonzero(entity[1:] != entity[:-1]) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(entity)]
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        yield str(entity[lo]), [c[lo:hi] for c in cols]


def _interleave(scores: np.ndarray, members: list) -> list:
    out: list = [None] * (2 * len(members))
    out[0::2] = scores.tolist()
    out[1::2] = members
    return out


_BULK_SET = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1]) end
return #KEYS
"""


def _write_tx_index(r, prefix, df: pd.DataFrame, lab: pd.DataFrame, ttl: int) -> int:
    """transaction id -> layout.encode_tx: what a label that arrives later needs to find the
    entities it changes."""
    if len(lab):
        cur = pd.DataFrame({"transaction_id": lab["transaction_id"].to_numpy(),
                            "l": T.to_seconds(lab["label_timestamp"]),
                            "f": lab["is_fraud"].to_numpy()})
        df = df.merge(cur, on="transaction_id", how="left")
    else:
        df = df.assign(l=np.nan, f=np.nan)
    parts = [df["t"].astype("string")]
    parts += [df[k].astype("string") for k in KEY_COLUMNS]
    for col, kind in VALUE_COLUMNS.items():
        parts.append(pd.Series(layout.to_cents(df[col].to_numpy(dtype=np.float64)),
                               index=df.index).astype("string") if kind == "number"
                     else df[col].astype("string"))
    parts.append(df["l"].astype("Int64").astype("string").fillna(""))
    parts.append(df["f"].astype("Int64").astype("string").fillna(""))
    values = parts[0]
    for p in parts[1:]:
        values = values + "|" + p
    keys = (prefix + ":x:" + df["transaction_id"].astype("string")).tolist()
    values = values.tolist()
    # One script call per 5,000 keys: SET with EX per key, without 2 commands per key on the wire.
    script = r.register_script(_BULK_SET)
    step = 5000
    for lo in range(0, len(keys), step):
        script(keys=keys[lo:lo + step], args=[ttl, *values[lo:lo + step]])
    return len(keys)
