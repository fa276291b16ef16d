"""`ffs materialize`: load the online state from the offline store's events.

The state is what online reads need for any request time at or after the newest event: for
each entity, the events still inside its longest window (+ label delay). Each entity's keys
are replaced inside one MULTI/EXEC with the whole entity, so loading twice gives the same
state (idempotent) and a reader never sees an entity half written. On a Redis Cluster
(redis.cluster) an entity value's keys share a slot and are replaced by one script call
(_REPLACE) instead, sent one pipeline per node, and the transaction index one SET per key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ffs.online import layout, state_format
from ffs.online.layout import RecordFormat
from ffs.online.shards import Shards, is_cluster, slot_of
from ffs.transformations import timestamps as T
from ffs.transformations.features import ENTITIES, KEY_COLUMNS, VALUE_COLUMNS
from ffs.transformations.schema import with_event_columns

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
    state_format.check(redis_conn, prefix, writing=True)
    tx = with_event_columns(tx)  # derived columns computed, absent optional ones null
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
    transaction's whole label history: only transactions ever labelled fraud have any.

    layout.fraud_spells, vectorised over all transactions at once (a loop per fraud cost more
    than the rest of the load): after each label the state is that label's is_fraud, so a
    spell opens at a fraud label whose predecessor (of the same transaction) is not fraud and
    closes at the next label, which is then genuine; a spell closed at its own start is
    dropped, one never closed is open (empty end)."""
    if labels.empty:
        return pd.DataFrame({"transaction_id": [], "member": []})
    fraud = labels["is_fraud"].to_numpy() == 1
    ever = labels.loc[fraud, "transaction_id"].unique()
    hist = labels[labels["transaction_id"].isin(ever)].assign(
        l=lambda d: T.to_seconds(d["label_timestamp"])).sort_values(["transaction_id", "l"])
    txid = hist["transaction_id"].to_numpy()
    lt = hist["l"].to_numpy(dtype=np.int64)
    f = hist["is_fraud"].to_numpy().astype(np.int64) == 1
    n = len(hist)
    new_tx = np.ones(n, dtype=bool)
    new_tx[1:] = txid[1:] != txid[:-1]
    prev_fraud = np.zeros(n, dtype=bool)
    prev_fraud[1:] = f[:-1]
    prev_fraud &= ~new_tx
    # the labels that change the state: opens and closes alternate within a transaction
    change = np.flatnonzero(f != prev_fraud)
    opens = change[f[change]]
    nxt = np.searchsorted(change, opens, side="right")  # the change after each open
    closed = nxt < len(change)
    close_at = change[np.minimum(nxt, len(change) - 1)]
    closed &= txid[close_at] == txid[opens]  # sorted: same id, same transaction
    start = lt[opens]
    end = np.where(closed, lt[close_at], 0)
    keep = ~closed | (end > start)
    opens, start, end, closed = opens[keep], start[keep], end[keep], closed[keep]
    ids = [str(t) for t in txid[opens].tolist()]
    ends = [str(e) if c else "" for e, c in zip(end.tolist(), closed.tolist(), strict=True)]
    members = [f"{i}\t{s}\t{e}" for i, s, e in zip(ids, start.tolist(), ends, strict=True)]
    return pd.DataFrame({"transaction_id": txid[opens], "member": members})


def _order(entity, part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `part` grouped by entity value, each value's rows by (t, transaction id
    as text), and each row's group number. The order inside a second decides the cumulative
    records, so it is the text order of the ids, as stored; comparing texts only where two
    events of one value share a second keeps the sort numeric (text sorts of 1.75 M ids cost
    more than the Redis write)."""
    if len(entity.keys) == 1:
        codes = pd.factorize(part[entity.keys[0]].to_numpy())[0]
    else:
        codes = part.groupby(list(entity.keys), sort=False).ngroup().to_numpy()
    t = part["t"].to_numpy()
    order = np.lexsort((t, codes))
    c, ts = codes[order], t[order]
    tie = np.zeros(len(order), dtype=bool)
    same = (c[1:] == c[:-1]) & (ts[1:] == ts[:-1])
    tie[1:] |= same
    tie[:-1] |= same
    if tie.any():
        rank = np.zeros(len(order), dtype=np.int64)
        texts = part["transaction_id"].to_numpy()[order[tie]].astype(str)
        rank[tie] = np.unique(texts, return_inverse=True)[1]
        order = order[np.lexsort((rank, ts, c))]
    return order, codes[order]


def _texts(values: list) -> list[str]:
    return [str(v) for v in values]


def _members(fmt: RecordFormat, part: pd.DataFrame, codes: np.ndarray) -> list[bytes]:
    """Every row's record (online/layout.py; its tail as writer.record_tail makes it, column
    by column), `part` in _order's order (`codes`: each row's group, contiguous)."""
    n = len(part)
    dtype: list[tuple[str, str]] = []
    cols: dict[str, np.ndarray] = {}
    cents = {c: layout.to_cents(part[c].to_numpy(dtype=np.float64)) for c in fmt.inputs}
    if fmt.has_count:
        starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
        first = np.repeat(starts, np.diff(np.r_[starts, n]))  # each row's group start
        dtype.append(("n", ">u4"))
        cols["n"] = np.arange(n) - first + 1
        for k, (col, sq) in enumerate(zip(fmt.cumulative, fmt.squares, strict=True)):
            dtype.append((f"s{k}", ">i8"))
            cols[f"s{k}"] = pd.Series(cents[col]).groupby(codes, sort=False).cumsum().to_numpy()
            if sq:  # floats: summed group by group, as a write adds them one by one
                q = pd.Series(cents[col].astype(np.float64) ** 2).groupby(
                    codes, sort=False).cumsum().to_numpy()
                dtype.append((f"q{k}", ">f8"))
                cols[f"q{k}"] = q
    for k, col in enumerate(fmt.numbers):
        dtype.append((f"v{k}", ">i8"))
        cols[f"v{k}"] = cents[col]
    # each distinct-counted text with a tab, then the txid (layout.text_of's rule)
    tail = _texts(part["transaction_id"].tolist())
    for c in reversed(fmt.texts):
        if VALUE_COLUMNS.get(c) == "number":
            text = _texts(layout.to_cents(part[c].to_numpy(dtype=np.float64)).tolist())
        else:
            text = _texts(part[c].tolist())
        tail = [a + "\t" + b for a, b in zip(text, tail, strict=True)]
    if not dtype:
        return [x.encode() for x in tail]
    fixed = np.empty(n, dtype=dtype)
    for name, values in cols.items():
        fixed[name] = values
    raw = fixed.tobytes()
    size = fixed.dtype.itemsize
    return [raw[i * size:(i + 1) * size] + x.encode() for i, x in enumerate(tail)]


def _write_entity(r, prefix, entity, fmt: RecordFormat, part: pd.DataFrame,
                  spells: pd.DataFrame, ttl: int) -> tuple[int, int]:
    order, codes = _order(entity, part)
    part = part.iloc[order]
    members = _members(fmt, part, codes)
    starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1] if len(codes) else \
        np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(codes)]
    # each group's value text (layout.entity_value), from its first row
    heads = [part[k].to_numpy()[starts].tolist() for k in entity.keys]
    names = [layout.entity_value(ids) for ids in zip(*heads, strict=True)]
    frauds: dict[int, list] = {}
    if fmt.fraud and len(spells):
        hit = pd.DataFrame({"transaction_id": part["transaction_id"].to_numpy(),
                            "t": part["t"].to_numpy(), "g": codes}).merge(
            spells, on="transaction_id", how="inner")
        for g, group in hit.groupby("g", sort=False):
            ms = group["member"].tolist()
            frauds[int(g)] = [*_interleave(group["t"].to_numpy(), ms),
                              layout.FRAUD_SUMMARY_SCORE, layout.fraud_summary(ms)]
    times = part["t"].to_numpy().tolist()
    if is_cluster(r):
        return _write_entity_shards(r, prefix, entity, starts, ends, names, codes, times,
                                    members, frauds, ttl)
    pipe, n = r.pipeline(transaction=True), 0
    for lo, hi, v in zip(starts.tolist(), ends.tolist(), names, strict=True):
        ev_key, fr_key = layout.entity_key(prefix, entity, v), layout.fraud_key(prefix, entity, v)
        pipe.delete(ev_key, fr_key)
        scored: list = [None] * (2 * (hi - lo))
        scored[0::2] = times[lo:hi]
        scored[1::2] = members[lo:hi]
        pipe.execute_command("ZADD", ev_key, *scored)
        pipe.expire(ev_key, ttl)
        g = int(codes[lo])
        if g in frauds:
            pipe.execute_command("ZADD", fr_key, *frauds[g])
            pipe.expire(fr_key, ttl)
        n += 1
        if n % CHUNK == 0:
            pipe.execute()
    pipe.execute()
    return n, sum(len(f) // 2 - 1 for f in frauds.values())


# One entity value replaced atomically (a cluster: its two keys share a slot). KEYS: events,
# fraud set; ARGV: ttl, number of event arguments, then events' (score, member)s, then the
# fraud set's. ZADD by 500 pairs: Lua's unpack is bounded by its C stack.
_REPLACE = """
redis.call('DEL', KEYS[1], KEYS[2])
local ttl, n = ARGV[1], tonumber(ARGV[2])
local function add(key, lo, hi)
  if hi < lo then return end
  for i = lo, hi, 1000 do
    redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 999, hi)))
  end
  redis.call('EXPIRE', key, ttl)
end
add(KEYS[1], 3, 2 + n)
add(KEYS[2], 3 + n, #ARGV)
return 1
"""


def _write_entity_shards(r, prefix, entity, starts, ends, names, codes, times, members,
                         frauds, ttl: int) -> tuple[int, int]:
    shards = Shards(r)
    sha = shards.script(_REPLACE)
    calls: list[tuple[int, tuple]] = []
    n = 0
    for lo, hi, v in zip(starts.tolist(), ends.tolist(), names, strict=True):
        ev_key, fr_key = layout.entity_key(prefix, entity, v), layout.fraud_key(prefix, entity, v)
        scored: list = [None] * (2 * (hi - lo))
        scored[0::2] = times[lo:hi]
        scored[1::2] = members[lo:hi]
        calls.append((slot_of(ev_key), shards.evalsha(
            sha, [ev_key, fr_key], [ttl, len(scored), *scored, *frauds.get(int(codes[lo]), ())])))
        n += 1
        if len(calls) == CHUNK:
            _check(shards.run(calls))
            calls = []
    _check(shards.run(calls))
    return n, sum(len(f) // 2 - 1 for f in frauds.values())


def _check(replies: list) -> None:
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply


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
    if is_cluster(r):  # keys of many slots: one SET each, one pipeline per node
        shards = Shards(r)
        step = 5000
        for lo in range(0, len(keys), step):
            _check(shards.run([(slot_of(k), ("SET", k, v, "EX", ttl))
                               for k, v in zip(keys[lo:lo + step], values[lo:lo + step],
                                               strict=True)]))
        return len(keys)
    # One script call per 5,000 keys: SET with EX per key, without 2 commands per key on the wire.
    script = r.register_script(_BULK_SET)
    step = 5000
    for lo in range(0, len(keys), step):
        script(keys=keys[lo:lo + step], args=[ttl, *values[lo:lo + step]])
    return len(keys)
