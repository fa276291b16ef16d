"""`ffs consistency`: do online reads equal the offline computation over the same events?

In the manner of Chronon's consistency job: take the events the stream should have counted
(the transactions and labels topics, judged by the event-only rules of jobs/stream/rules.py,
and each message's fate compared with the stream's dead letters), compute features offline with
the batch engine at sampled (entity, time) points, read the same points online, and report
per feature the share of rows that mismatch, are missing online, or are extra online.
It also checks the enriched topic: the last row per transaction (upsert semantics) against the
offline features at that transaction, with missing and extra rows.

Sampled request times fall in the last day before the newest event: the online state keeps
each entity's longest window + label delay, so older reads are not promised (README).
The events' columns are the loaded repo's (bus/messages.py): every join key and value column.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ffs.bus import kafka
from ffs.bus import messages as M
from ffs.config import Config
from ffs.jobs.stream import rules
from ffs.online.client import MISSING_ENTITY, OnlineClient, redis_client
from ffs.transformations import ids as _ids
from ffs.transformations.declarations import KEY_SEPARATOR
from ffs.transformations.engine import compute_features
from ffs.transformations.features import (
    ENTITIES,
    INPUT_COLUMNS,
    KEY_COLUMNS,
    OPTIONAL_COLUMNS,
    VALUE_COLUMNS,
    Entity,
    entity_feature_names,
    feature_names,
)

DAY = 86_400
# the first entity with features: a feature's status says whether it has state online, and
# a point is known offline when that entity has a transaction on the bus
SIDE: Entity = next(e for e in ENTITIES if entity_feature_names(e))
SIDE_FEATURE = entity_feature_names(SIDE)[0]
# the value columns are request features too where the repo serves them as such (the shipped
# amount): a point without a transaction has none, so they are not compared
COMPARED = [n for n in feature_names() if n not in VALUE_COLUMNS]


@dataclass
class Rates:
    rows: int = 0
    compared: int = 0  # rows compared value by value (a sample of `rows` for the enriched topic)
    mismatch: int = 0  # present on both sides, different value
    missing: int = 0  # offline has it, online does not
    extra: int = 0  # online has it, offline does not
    by_feature: dict[str, int] = field(default_factory=dict)  # mismatches per feature
    examples: list[dict] = field(default_factory=list)

    def rate(self, n: int) -> float:
        return n / self.rows if self.rows else 0.0

    def line(self, what: str) -> str:
        sample = f" ({self.compared:,} compared)" if self.compared != self.rows else ""
        mis = self.mismatch / self.compared if self.compared else 0.0
        return (f"{what}: {self.rows:,} rows{sample}, mismatch {self.mismatch} "
                f"({mis:.4%} of compared), missing {self.missing} "
                f"({self.rate(self.missing):.4%}), extra {self.extra} "
                f"({self.rate(self.extra):.4%})")


@dataclass
class Decisions:
    """Each input message's fate by the event-only rules (jobs/stream/rules.py) against the
    stream's (dead-lettered with a reason, or accepted). A disagreement means the stream's
    results depended on something other than the events, such as batch boundaries."""

    messages: int = 0
    disagree: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # "rules -> stream": count
    examples: list[dict] = field(default_factory=list)

    def add(self, rec, rule: str | None, stream: str | None) -> None:
        self.messages += 1
        if rule == stream:
            return
        self.disagree += 1
        kind = f"{rule or 'accepted'} -> {stream or 'accepted'}"
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.examples) < 5:
            self.examples.append({"message": f"{rec.topic}/{rec.partition}/{rec.offset}",
                                  "rules": rule or "accepted", "stream": stream or "accepted"})

    def line(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        return (f"stream decisions: {self.messages:,} messages, {self.disagree} differ from "
                f"the event-only rules" + (f" ({kinds})" if kinds else ""))


@dataclass
class ConsistencyReport:
    online: Rates
    enriched: Rates | None
    transactions: int
    labels: int
    excluded: int  # input messages the rules refuse, left out of the offline side
    seconds: float
    decisions: Decisions = field(default_factory=Decisions)

    @property
    def ok(self) -> bool:
        parts = [self.online] + ([self.enriched] if self.enriched else [])
        return self.decisions.disagree == 0 and \
            all(r.mismatch == 0 and r.missing == 0 and r.extra == 0 for r in parts)

    def lines(self) -> list[str]:
        out = [f"events: {self.transactions:,} transactions, {self.labels:,} labels "
               f"({self.excluded:,} refused messages left out)",
               self.decisions.line(),
               *[f"  e.g. {ex}" for ex in self.decisions.examples[:3]],
               self.online.line("online reads at sampled points")]
        if self.enriched is not None:
            out.append(self.enriched.line("enriched topic (last row per transaction)"))
        for r in (self.online, self.enriched):
            if r is not None and r.by_feature:
                out.append("  mismatches by feature: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(r.by_feature.items())))
            for ex in (r.examples[:3] if r is not None else []):
                out.append(f"  e.g. {ex}")
        out.append(f"{'CONSISTENT' if self.ok else 'INCONSISTENT'} ({self.seconds:.1f} s)")
        return out


def _same(a, b) -> bool:
    a_nan = a is None or (isinstance(a, float) and math.isnan(a))
    b_nan = b is None or (isinstance(b, float) and math.isnan(b))
    if a_nan or b_nan:
        return a_nan and b_nan
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def events_from_bus(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, int, Decisions]:
    """The transactions and labels the rules accept, read from the two topics in log order
    (not what the stream says it accepted), and each message's fate compared with the
    stream's dead letters. Only the wall-clock rule (future_timestamp) is taken from the
    dead letters: it depended on when the stream ran."""
    k, s = cfg.kafka, cfg.stream
    id_types = _ids.types(cfg)
    refused: dict[tuple[str, int, int], str] = {}
    for rec in kafka.read_all(k, k.dead_letter_topic):
        if rec.value is not None:
            d = json.loads(rec.value)
            refused[(d["source_topic"], d["partition"], d["offset"])] = d["reason"]
    ret_tx, ret_labels = rules.retentions()
    verdict: dict[tuple[str, int, int], str | None] = {}
    newest: dict[tuple[str, int], int] = {}

    def timed(rec, parse, when, retention):
        where = (rec.topic, rec.partition, rec.offset)
        try:
            event = parse(rec.value, id_types)
        except M.Refused as exc:
            verdict[where] = exc.reason
            return None
        if refused.get(where) == M.FUTURE:
            verdict[where] = M.FUTURE
            return None
        bad = rules.judge_time(when(event), newest.get(where[:2]), s.allowed_lateness_s,
                               retention)
        verdict[where] = bad and bad[0]
        if bad is None:
            newest[where[:2]] = max(when(event), newest.get(where[:2], when(event)))
            return event
        return None

    copies: dict[str, list] = {}
    tx_recs = sorted(kafka.read_all(k, k.transactions_topic), key=lambda r: (r.partition,
                                                                              r.offset))
    for rec in tx_recs:
        tx = timed(rec, M.parse_transaction, lambda e: e.t, ret_tx)
        if tx is not None:
            copies.setdefault(tx.transaction_id, []).append((rec, tx))
    winners: dict[str, M.Transaction] = {}
    for txid, group in copies.items():
        win = group[rules.first_copy([(r.partition, r.offset, r.timestamp_ms)
                                      for r, _ in group])][1]
        winners[txid] = win
        for rec, tx in group:
            if tx != win:
                verdict[(rec.topic, rec.partition, rec.offset)] = M.CONFLICT
    lab_rows = []
    lab_recs = sorted(kafka.read_all(k, k.labels_topic), key=lambda r: (r.partition, r.offset))
    for rec in lab_recs:
        lab = timed(rec, M.parse_label, lambda e: e.label_t, ret_labels)
        if lab is None:
            continue
        where = (rec.topic, rec.partition, rec.offset)
        paid = winners.get(lab.transaction_id)
        if paid is None:
            verdict[where] = M.UNKNOWN_TRANSACTION
        elif lab.label_t < paid.t:
            verdict[where] = M.LABEL_BEFORE_TRANSACTION
        else:
            lab_rows.append((lab.transaction_id, lab.is_fraud, lab.label_t))
    decisions = Decisions()
    for rec in tx_recs + lab_recs:
        where = (rec.topic, rec.partition, rec.offset)
        decisions.add(rec, verdict.get(where), refused.get(where))
    tx_rows = [(t.transaction_id, *(t.get(c) for c in M.COLUMNS), t.t)
               for t in winners.values()]
    tx = pd.DataFrame(tx_rows, columns=["transaction_id", *M.COLUMNS, "t"])
    tx["event_timestamp"] = pd.to_datetime(tx.pop("t"), unit="s", utc=True)
    labels = pd.DataFrame(lab_rows, columns=["transaction_id", "is_fraud", "label_t"])
    labels["label_timestamp"] = pd.to_datetime(labels.pop("label_t"), unit="s", utc=True)
    labels["is_fraud"] = labels["is_fraud"].astype("int64")
    excluded = sum(1 for v in verdict.values() if v is not None)
    return tx.sort_values("event_timestamp", kind="stable").reset_index(drop=True), labels, \
        excluded, decisions


def sample_points(tx: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n request points in the last day: the join keys of transactions seen in that day
    (every key, as a scoring request carries them), at uniformly drawn seconds, plus the
    day's own transactions at their own time."""
    rng = np.random.default_rng(seed)
    newest = tx["event_timestamp"].max()
    recent = tx[tx["event_timestamp"] > newest - pd.Timedelta(days=1)]
    if recent.empty:
        return recent.iloc[:0]
    pick = recent.iloc[rng.integers(0, len(recent), n // 2)]
    offsets = rng.integers(0, DAY, len(pick))
    at = newest - pd.to_timedelta(offsets, unit="s")
    free = pd.DataFrame({**{k: pick[k].to_numpy() for k in KEY_COLUMNS},
                         "event_timestamp": at,
                         **{c: np.nan if kind == M.NUMBER else None
                            for c, kind in VALUE_COLUMNS.items()},
                         "transaction_id": None})
    own = recent.iloc[rng.choice(len(recent), min(n - n // 2, len(recent)), replace=False)]
    own = own[[*KEY_COLUMNS, "event_timestamp", *VALUE_COLUMNS, "transaction_id"]]
    return pd.concat([free, own], ignore_index=True)


def _compare(offline: pd.DataFrame, online_rows: list[dict], online_status: list[bool],
             offline_known: np.ndarray, ids: list, rates: Rates) -> None:
    for i, (row, present) in enumerate(zip(online_rows, online_status, strict=False)):
        rates.rows += 1
        rates.compared += 1
        if offline_known[i] and not present:
            rates.missing += 1
            continue
        if present and not offline_known[i]:
            rates.extra += 1
            continue
        bad = [n for n in COMPARED if not _same(row.get(n), offline.at[i, n])]
        if bad:
            rates.mismatch += 1
            for n in bad:
                rates.by_feature[n] = rates.by_feature.get(n, 0) + 1
            if len(rates.examples) < 5:
                rates.examples.append({"row": ids[i], "feature": bad[0],
                                       "online": row.get(bad[0]),
                                       "offline": offline.at[i, bad[0]]})


def check(cfg: Config, samples: int = 2000, seed: int = 0, enriched: bool = True,
          enriched_samples: int = 20_000,
          log: Callable[[str], None] = print) -> ConsistencyReport:
    started = time.perf_counter()
    tx, labels, excluded, decisions = events_from_bus(cfg)
    log(f"read {len(tx):,} transactions and {len(labels):,} labels from the bus")
    log(decisions.line())
    if tx.empty:
        return ConsistencyReport(Rates(), None, 0, len(labels), excluded, 0.0, decisions)
    points = sample_points(tx, samples, seed)
    offline = compute_features(tx, labels, points)
    known = _seen(points, tx, SIDE)
    client = OnlineClient(redis_client(dataclasses.replace(cfg.redis, timeout_ms=30_000)),
                          prefix=cfg.redis.prefix, max_batch=1000,
                          id_types=_ids.types(cfg)).check_format()
    rows = points.to_dict("records")
    for r in rows:  # a free point is a read without a transaction: no id, no values
        if r["transaction_id"] is None or any(_missing(r[c]) for c in INPUT_COLUMNS
                                              if c not in OPTIONAL_COLUMNS):
            for c in (*VALUE_COLUMNS, "transaction_id"):
                r.pop(c)
        else:  # a null coordinate is sent as null; a derived column is never sent
            r.update((c, None) for c in OPTIONAL_COLUMNS if _missing(r[c]))
            for c in VALUE_COLUMNS:
                if c not in INPUT_COLUMNS:
                    r.pop(c)
    online = Rates()
    for i in range(0, len(rows), 1000):
        chunk = rows[i:i + 1000]
        res = client.get_features(chunk)
        if res.error:
            raise RuntimeError(f"online read failed: {res.error}")
        got = [res.row(j) for j in range(len(chunk))]
        present = [res.statuses[SIDE_FEATURE][j] != MISSING_ENTITY
                   for j in range(len(chunk))]
        _compare(offline.iloc[i:i + len(chunk)].reset_index(drop=True), got, present,
                 known[i:i + len(chunk)], [f"{_side_id(r)}@{r['event_timestamp']}"
                                           for r in chunk], online)
    log(online.line("online"))
    rep_enriched = _check_enriched(cfg, tx, labels, enriched_samples, seed, log) \
        if enriched else None
    return ConsistencyReport(online, rep_enriched, len(tx), len(labels), excluded,
                             time.perf_counter() - started, decisions)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seen(points: pd.DataFrame, tx: pd.DataFrame, entity: Entity) -> np.ndarray:
    """Per point: whether `entity`'s id (its key tuple) has a transaction in `tx`."""
    keys = list(entity.keys)
    seen = set(tx[keys].itertuples(index=False, name=None))
    return np.array([k in seen for k in points[keys].itertuples(index=False, name=None)],
                    dtype=bool)


def _side_id(row: dict) -> str:
    return KEY_SEPARATOR.join(str(row[k]) for k in SIDE.keys)


def _check_enriched(cfg: Config, tx: pd.DataFrame, labels: pd.DataFrame, n: int, seed: int,
                    log: Callable[[str], None]) -> Rates:
    last: dict[str, dict] = {}
    for rec in kafka.read_all(cfg.kafka, cfg.kafka.enriched_topic):
        if rec.value is None:  # a tombstone: nothing to compare
            continue
        row = json.loads(rec.value)
        if row.get("kind") == "transaction":
            prev = last.get(row["transaction_id"])
            if prev is None or row["processed_at_ms"] >= prev["processed_at_ms"]:
                last[row["transaction_id"]] = row
    rates = Rates()
    ids = set(tx["transaction_id"])
    rates.extra = sum(1 for txid in last if txid not in ids)
    rates.missing = sum(1 for txid in ids if txid not in last)
    have = tx[tx["transaction_id"].isin(last)]
    if len(have) > n:
        have = have.sample(n, random_state=seed)
    have = have.reset_index(drop=True)
    offline = compute_features(tx, labels, have)
    rows = [last[txid] for txid in have["transaction_id"]]
    saved = rates.missing, rates.extra
    _compare(offline, rows, [True] * len(rows), np.ones(len(rows), bool),
             list(have["transaction_id"]), rates)
    rates.missing, rates.extra = saved
    rates.rows = len(ids)  # missing and extra are over all of them; mismatch over `compared`
    log(rates.line("enriched"))
    return rates
