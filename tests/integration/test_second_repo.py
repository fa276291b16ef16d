"""A second feature repo, of another shape (tests/fixtures/payments_repo: payments by accounts
on devices from IPs, text ids, a composite (account, device) key, declines and chargebacks, a
standard deviation, a delayed last value, its own request function and service), runs
through apply, backfill (local and Spark), training set (local and Spark), materialize, online
reads, the stream writer and the HTTP server with no product code changed for it: only
FFS_FEATURES_REPO points at it. Each path runs in a fresh process, as a team's jobs would.

The data is this module's own (`generate`: accounts with their devices and a home IP,
devices shared by rings of accounts, card-testing bursts with declines, chargebacks days
later, some reversed), not the shipped repo's generator. Every path is checked against the
brute-force reference (tests/reference.py, over the loaded repo's features), and the online
reads against the training set. A second test runs the production stream on it: Apache
Kafka, `ffs stream` (Spark), dead letters of its own columns, `ffs consistency`, and the
Pinot schemas `ffs pinot generate` writes for it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "payments_repo"
REQUEST = ["payment_amount", "amount_vs_account_mean", "shared_device", "online_payment"]
WINDOWED = ["account_payments_10m", "account_declines_10m", "account_amount_mean_1d",
            "account_amount_std_1d", "account_amount_min_1d", "account_amount_max_1d",
            "account_channels_1d", "account_last_amount_lag1h", "account_payments_1d_lag1h",
            "device_accounts_1h", "account_device_payments_7d", "account_device_first_seen_s",
            "ip_payments_14d_lag3d", "ip_fraud_rate_14d_lag3d"]
FEATURES = REQUEST + WINDOWED + ["account_gap_s"]
KEYS = ["account_id", "device_id", "ip"]
T0 = pd.Timestamp("2024-05-01", tz="UTC")


# ---- the data: payments of accounts on devices from IPs ----------------------------------

def generate(seed: int = 11, accounts: int = 40, days: int = 14) -> tuple[pd.DataFrame,
                                                                           pd.DataFrame]:
    """(payments, chargebacks), deterministic. Everyday payments from each account's own
    devices and home IP; card-testing bursts (many payments in minutes, half declined, ties in
    one second); rings of accounts paying from one shared device within half an hour; and
    chargebacks 1 h to 10 days after the payment, some reversed later. Bursts and rings also
    happen in the last hours, where the tests read. Only chargebacks known a day before the
    newest payment are kept: the tests read in that last day, and the online state answers
    with the labels it holds (README, "Online serving"), so every read sees them all."""
    rng = np.random.default_rng(seed)
    span = days * 86400
    names = [f"acct-{a:03d}" for a in range(accounts)]
    own = {a: [f"dev-{a:03d}-{k}" for k in range(1 + (a % 3 == 0))] for a in range(accounts)}
    shared = [f"dev-shared-{k}" for k in range(4)]
    rings = {d: rng.choice(accounts, size=3 + k, replace=False).tolist()
             for k, d in enumerate(shared)}
    ips = [f"10.0.{k // 8}.{k % 8 + 1}" for k in range(24)]
    home = {a: ips[int(rng.integers(len(ips)))] for a in range(accounts)}
    rows: list[tuple] = []

    def pay(a: int, s: int, device: str, ip: str, burst: bool) -> None:
        amount = 0.0 if rng.random() < 0.02 else round(float(rng.lognormal(3.0, 1.0)), 2)
        declined = int(rng.random() < (0.45 if burst else 0.04))
        channel = "online" if burst else str(rng.choice(["online", "pos", "app"],
                                                       p=[0.4, 0.4, 0.2]))
        rows.append((names[a], device, ip, int(s), amount, declined, channel, burst))

    for a in range(accounts):
        for s in np.sort(rng.integers(0, span, rng.poisson(days * rng.uniform(2, 6)))):
            ip = home[a] if rng.random() < 0.85 else ips[int(rng.integers(len(ips)))]
            pay(a, s, own[a][int(rng.integers(len(own[a])))], ip, False)
    late = [span - int(rng.integers(600, 5 * 3600)) for _ in range(4)]
    for start in rng.integers(0, span - 3600, 10).tolist() + late:  # card testing
        a = int(rng.integers(accounts))
        device, ip = own[a][0], ips[int(rng.integers(len(ips)))]
        for s in start + np.cumsum(rng.integers(0, 40, int(rng.integers(5, 12)))):
            pay(a, s, device, ip, True)
    for start in rng.integers(0, span - 3600, 6).tolist() + late[:3]:  # a ring on one device
        device = shared[int(rng.integers(len(shared)))]
        for a in rings[device]:
            for s in start + rng.integers(0, 1800, int(rng.integers(1, 4))):
                pay(a, s, device, home[a], True)
    tx = pd.DataFrame(rows, columns=[*KEYS, "s", "amount", "declined", "channel", "burst"])
    tx = tx[tx["s"] < span].sort_values("s", kind="stable").reset_index(drop=True)
    tx.insert(0, "transaction_id", [f"pay-{i:05d}" for i in range(len(tx))])
    tx["event_timestamp"] = T0 + pd.to_timedelta(tx["s"], unit="s")

    fraud = np.where(tx["burst"] & (tx["declined"] == 0), 0.6, 0.01) > rng.random(len(tx))
    cleared = ~fraud & (rng.random(len(tx)) < 0.03)
    labelled = tx[fraud | cleared]
    delay = rng.integers(3600, 10 * 86400, len(labelled))
    labels = pd.DataFrame({"transaction_id": labelled["transaction_id"].to_numpy(),
                           "is_fraud": fraud[labelled.index].astype(int),
                           "s": labelled["s"].to_numpy() + delay})
    reversed_ = labels[labels["is_fraud"] == 1].sample(frac=0.2, random_state=seed).copy()
    reversed_["is_fraud"] = 0
    reversed_["s"] += rng.integers(86400, 4 * 86400, len(reversed_))
    labels = pd.concat([labels, reversed_], ignore_index=True)
    labels = labels[labels["s"] <= tx["s"].max() - 86400].sort_values("s").reset_index(drop=True)
    labels["label_timestamp"] = T0 + pd.to_timedelta(labels["s"], unit="s")
    return (tx[["transaction_id", *KEYS, "event_timestamp", "amount", "declined", "channel"]],
            labels[["transaction_id", "is_fraud", "label_timestamp"]])


def request_points(stored_tx: pd.DataFrame) -> pd.DataFrame:
    """Where the tests read: at random times in the last 6 hours for the keys of a payment,
    at payments' own seconds of the last day (ties with t, "strictly before t"), and for an
    account on a device it never used (a new pair)."""
    newest = stored_tx["event_timestamp"].max()
    rng = np.random.default_rng(1)
    pick = stored_tx.sample(70, random_state=1)
    at = newest - pd.to_timedelta(rng.integers(0, 6 * 3600, len(pick)), unit="s")
    own = stored_tx[stored_tx["event_timestamp"] > newest - pd.Timedelta("1d")].sample(
        40, random_state=2)
    mixed = stored_tx.sample(10, random_state=3)
    return pd.concat([
        pd.DataFrame({**{k: pick[k].to_numpy() for k in KEYS}, "event_timestamp": at}),
        own[[*KEYS, "event_timestamp"]],
        pd.DataFrame({"account_id": mixed["account_id"].to_numpy(),
                      "device_id": np.roll(mixed["device_id"].to_numpy(), 1),
                      "ip": mixed["ip"].to_numpy(),
                      "event_timestamp": [newest] * len(mixed)})], ignore_index=True)


def same(a, b) -> bool:
    na = a is None or (isinstance(a, float) and math.isnan(a))
    nb = b is None or (isinstance(b, float) and math.isnan(b))
    return (na and nb) or (not na and not nb and math.isclose(float(a), float(b),
                                                                rel_tol=1e-9, abs_tol=1e-9))


def mismatches(got: pd.DataFrame, want: pd.DataFrame, names: list[str]) -> list:
    """(row, feature, got, want) where two frames of the same rows differ; the first five."""
    got, want = got.reset_index(drop=True), want.reset_index(drop=True)
    bad = [(j, n, _plain(got.at[j, n]), _plain(want.at[j, n])) for j in range(len(want))
           for n in names if not same(got.at[j, n], want.at[j, n])]
    return bad[:5] + ([f"... {len(bad)} in all"] if len(bad) > 5 else [])


def _plain(v):
    return v.item() if hasattr(v, "item") else v


# ---- every path, in a process that loads the payments repo -------------------------------

RUN = r'''
import asyncio, dataclasses, json, sys
from pathlib import Path
import httpx, pandas as pd, redis
from ffs.bus import messages as M
from ffs.config import load_config
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.jobs.batch.spark import spark_session
from ffs.jobs.batch.training_set import training_set
from ffs.jobs.stream.batch import BatchProcessor
from ffs.online.client import OnlineClient
from ffs.online.loader import load_state
from ffs.online.redis_server import RedisServer
from ffs.online.server import create_app
from tests.integration.test_second_repo import (KEYS, generate, mismatches, request_points)
from tests.reference import reference_features
from ffs.transformations import ids
from ffs.transformations.features import KEY_COLUMNS, VALUE_COLUMNS, feature_names

work = Path(sys.argv[1])
tx, labels = generate()
tx.to_parquet(work / "tx.parquet")
labels.to_parquet(work / "labels.parquet")
cfg = load_config()
names = feature_names()
out = {"features": names, "keys": list(KEY_COLUMNS), "values": VALUE_COLUMNS}

summary = backfill(cfg, work / "tx.parquet", work / "labels.parquet", "local", log=lambda _: None)
out["rows"], out["labels"], out["rejected"] = summary.transactions, summary.labels, summary.rejected
store = OfflineStore(cfg.offline.path)
stored_tx, stored_labels = store.read("transactions"), store.read("labels")
table = store.read("features").set_index("transaction_id").loc[stored_tx["transaction_id"]]
out["table_columns"] = list(table.columns)
newest = stored_tx["event_timestamp"].max()

points = request_points(stored_tx)
ref = reference_features(stored_tx, stored_labels, points)
local = training_set(points, cfg).reset_index(drop=True)
out["training_vs_reference"] = mismatches(local, ref, names)
out["nonzero"] = {n: int((local[n].fillna(0) != 0).sum()) for n in names}

# the backfill's feature table: every window at each payment's own instant, that payment in
sample = stored_tx.sample(60, random_state=4)
at_tx = reference_features(stored_tx, stored_labels, sample[[*KEYS, "event_timestamp"]])
windowed = [n for n in names if n not in ("payment_amount", "amount_vs_account_mean",
                                          "shared_device", "online_payment")]
out["backfill_vs_reference"] = mismatches(table.loc[sample["transaction_id"]], at_tx, windowed)

spark = spark_session(cfg.spark)
try:
    scfg = dataclasses.replace(cfg, offline=dataclasses.replace(
        cfg.offline, path=str(work / "offline-spark")))
    backfill(scfg, work / "tx.parquet", work / "labels.parquet", "spark", log=lambda _: None,
             spark=spark)
    spark_table = OfflineStore(scfg.offline.path).read("features").set_index(
        "transaction_id").loc[stored_tx["transaction_id"]]
    out["spark_backfill_vs_local"] = mismatches(spark_table, table, names)
    spark_set = training_set(points, cfg, engine="spark", spark=spark)
    out["spark_training_vs_reference"] = mismatches(spark_set, ref, names)
finally:
    spark.stop()

def read(conn, prefix):
    client = OnlineClient(conn, prefix=prefix, id_types=ids.types(cfg), max_batch=1000)
    rows = [{**{k: getattr(r, k) for k in KEYS},
             "event_timestamp": int(r.event_timestamp.timestamp())} for r in points.itertuples()]
    res = client.get_features(rows)
    assert res.error is None, res.error
    return pd.DataFrame({n: res.values[n] for n in res.feature_names})

# a new account's first payment, on a device and from an IP already seen: it is in its own
# windows (not in the delayed ones); the device's and IP's other payments count as stored
last = stored_tx.loc[stored_tx["event_timestamp"].idxmax()]
new_row = {"account_id": "acct-new", "device_id": last["device_id"], "ip": last["ip"],
           "transaction_id": "pay-new", "event_timestamp": int(newest.timestamp()),
           "amount": 7.5, "declined": 0, "channel": "online"}
before = reference_features(stored_tx, stored_labels, pd.DataFrame(
    [{**{k: new_row[k] for k in KEYS}, "event_timestamp": newest}]))
out["new_account_known"] = {n: (None if pd.isna(before.at[0, n]) else float(before.at[0, n]))
                            for n in ("device_accounts_1h", "ip_payments_14d_lag3d",
                                      "ip_fraud_rate_14d_lag3d")}

with RedisServer() as server:
    conn = redis.Redis.from_url(server.url)
    load_state(conn, stored_tx, stored_labels, prefix="load")
    online = read(conn, "load")
    out["online_vs_training"] = mismatches(online, local, names)
    out["online_vs_reference"] = mismatches(online, ref, names)
    scored = OnlineClient(conn, prefix="load", id_types=ids.types(cfg)).get_features([new_row])
    out["new_account"] = {n: scored.values[n][0] for n in names}

    # the HTTP server, on the same state: the repo's keys and request fields pass through
    hcfg = load_config()
    hcfg.redis.url, hcfg.redis.prefix = server.url, "load"
    body = {"feature_service": "fraud_v2", "entities": {k: [new_row[k]] for k in KEYS},
            "request_data": {k: [new_row[k]] for k in ("transaction_id", "event_timestamp",
                                                        "amount", "declined", "channel")}}

    async def post():
        transport = httpx.ASGITransport(app=create_app(hcfg))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/get-online-features", json=body)

    resp = asyncio.run(post())
    doc = resp.json()
    out["http_status"] = resp.status_code
    out["http"] = ({name: col["values"][0] for name, col in
                    zip(doc["metadata"]["feature_names"], doc["results"], strict=True)
                    if name in names} if resp.status_code == 200 else doc)

    # the stream writer: every stored event as a message, in time order, one pass
    stcfg = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, prefix="stream"),
                                stream=dataclasses.replace(cfg.stream, enrich=False,
                                                           allowed_lateness_s=40 * 86400))
    def message(r):
        return {"transaction_id": r.transaction_id, **{k: getattr(r, k) for k in KEYS},
                "event_timestamp": M.iso(int(r.event_timestamp.timestamp())),
                "amount": float(r.amount), "declined": int(r.declined), "channel": r.channel}
    events = [(int(r.event_timestamp.timestamp()), 0, stcfg.kafka.transactions_topic,
               M.transaction_message(message(r))) for r in stored_tx.itertuples()]
    events += [(int(r.label_timestamp.timestamp()), 1, stcfg.kafka.labels_topic,
                M.label_message({"transaction_id": r.transaction_id,
                                 "is_fraud": int(r.is_fraud),
                                 "label_timestamp": M.iso(int(r.label_timestamp.timestamp()))}))
               for r in stored_labels.itertuples()]
    events.sort(key=lambda e: (e[0], e[1]))
    dead = {}
    proc = BatchProcessor(stcfg, conn, lambda topic, key, value: None, lambda: None)
    for batch, lo in enumerate(range(0, len(events), 1000)):  # micro-batches, in order
        part = events[lo:lo + 1000]
        rep = proc.process(batch, {"topic": [e[2] for e in part],
                                   "partition": [0] * len(part),
                                   "offset": list(range(lo, lo + len(part))),
                                   "key": [None] * len(part), "value": [e[3] for e in part],
                                   "timestamp_ms": [0] * len(part)})
        for reason, n in rep.dead_letters.items():
            dead[reason] = dead.get(reason, 0) + n
    out["stream_dead"] = dead
    out["stream_vs_reference"] = mismatches(read(conn, "stream"), ref, names)
    conn.close()
print("RESULT " + json.dumps(out, default=str))
'''


@pytest.fixture()
def env(tmp_path):
    repo = tmp_path / "payments_repo"
    shutil.copytree(FIXTURE, repo, ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    return {**os.environ, "FFS_FEATURES_REPO": str(repo), "FFS_IDS_TRANSACTION_ID": "string",
            "FFS_IDS_ACCOUNT_ID": "string", "FFS_IDS_DEVICE_ID": "string",
            "FFS_IDS_IP": "string", "FFS_OFFLINE_PATH": str(tmp_path / "offline"),
            "FFS_VALIDATION_ENABLED": "false"}


def test_the_generator_makes_the_shapes_the_features_read():
    """Deterministic, and rich where the features look: shared devices, bursts with declines
    and same-second ties, zero amounts, chargebacks after their payment, reversals."""
    tx, labels = generate()
    again, _ = generate()
    pd.testing.assert_frame_equal(tx, again)
    assert len(tx) > 1500 and tx["transaction_id"].is_unique
    per_device = tx.groupby("device_id")["account_id"].nunique()
    assert (per_device >= 3).sum() >= 3
    assert tx.duplicated(["account_id", "event_timestamp"]).any()
    assert 0.03 < tx["declined"].mean() < 0.2 and (tx["amount"] == 0).any()
    assert set(tx["channel"]) == {"online", "pos", "app"}
    newest = tx["event_timestamp"].max()
    assert tx[tx["event_timestamp"] > newest - pd.Timedelta("6h")]["declined"].sum() > 0
    joined = labels.merge(tx, on="transaction_id")
    assert (joined["label_timestamp"] >= joined["event_timestamp"]).all()
    assert labels["label_timestamp"].max() <= newest - pd.Timedelta("1d")
    assert labels["is_fraud"].sum() > 20 and labels["transaction_id"].duplicated().any()


@pytest.mark.redis
@pytest.mark.spark
def test_a_second_repo_runs_every_path_with_no_product_change(tmp_path, env):
    check = subprocess.run([sys.executable, "-m", "ffs.cli", "apply", "--check"], env=env,
                           cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "applied payments_repo: service fraud_v2, 15 windowed and 4 request" in check.stdout
    listing = subprocess.run([sys.executable, "-m", "ffs.cli", "features"], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert "feature service fraud_v2: 19 features" in listing.stdout, listing.stdout
    run = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], env=env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["features"] == FEATURES
    assert out["keys"] == KEYS
    assert out["values"] == {"amount": "number", "declined": "number", "channel": "text"}
    assert [c for c in out["table_columns"] if c in FEATURES] == FEATURES
    assert out["rows"] > 1500 and out["labels"] > 20
    assert out["rejected"] == {"transactions": {}, "labels": {}}
    for path in ("training_vs_reference", "backfill_vs_reference", "spark_backfill_vs_local",
                 "spark_training_vs_reference", "online_vs_training", "online_vs_reference",
                 "stream_vs_reference"):
        assert out[path] == [], (path, out[path])
    assert out["stream_dead"] == {}
    # real windows: every windowed feature is non-zero somewhere among the points
    assert all(out["nonzero"][n] > 0 for n in WINDOWED + ["account_gap_s"]), out["nonzero"]
    # a new account's first payment counts in its own windows, not in the delayed ones
    known = out["new_account_known"]
    accounts_on_device = known["device_accounts_1h"] + 1
    assert out["new_account"] == {
        "payment_amount": 7.5, "amount_vs_account_mean": 0.0,
        "shared_device": int(accounts_on_device >= 2), "online_payment": 1,
        "device_accounts_1h": accounts_on_device, "account_payments_10m": 1,
        "account_declines_10m": 0.0, "account_amount_mean_1d": 7.5,
        "account_amount_std_1d": None, "account_amount_min_1d": 7.5,
        "account_amount_max_1d": 7.5, "account_channels_1d": 1,
        "account_last_amount_lag1h": None, "account_payments_1d_lag1h": 0,
        "account_device_payments_7d": 1, "account_device_first_seen_s": 0.0,
        "ip_payments_14d_lag3d": known["ip_payments_14d_lag3d"],
        "ip_fraud_rate_14d_lag3d": known["ip_fraud_rate_14d_lag3d"], "account_gap_s": None}
    assert out["http_status"] == 200, out["http"]
    assert out["http"] == out["new_account"]


# ---- the real stream: Kafka, `ffs stream` (Spark), then `ffs consistency` ----------------

ISSUE = "2024-05-14T12:00:00Z"  # inside the generated fortnight: only the field is wrong
GOOD = {"transaction_id": "bad-0", "account_id": "acct-001", "device_id": "dev-001-0",
        "ip": "10.0.0.1", "event_timestamp": ISSUE, "amount": 5.0, "declined": 0,
        "channel": "pos"}
# (message, dead-letter reason, the column its detail names): faults in this repo's own
# columns, each message valid up to its fault (fields are checked in order, the first bad
# one is the reason)
BAD_PAYMENTS = [
    ({**GOOD, "transaction_id": "bad-1", "device_id": "d|1"}, "bad_entity_id", "device_id"),
    ({**GOOD, "transaction_id": "bad-2", "declined": "1"}, "bad_type", "declined"),
    ({k: v for k, v in {**GOOD, "transaction_id": "bad-3"}.items() if k != "ip"},
     "missing_field", "ip"),
    ({**GOOD, "transaction_id": "bad-4", "channel": "in store"}, "bad_entity_id", "channel"),
    ({**GOOD, "transaction_id": "bad-5", "declined": -1}, "bad_amount", "declined"),
    ({**GOOD, "transaction_id": "bad-6", "account_id": ["acct-001"]}, "bad_type",
     "account_id"),
]

PRODUCE = r'''
import json, sys
from pathlib import Path
from ffs.bus import kafka
from ffs.bus import messages as M
from ffs.bus.producer import EventProducer
from ffs.bus.replay import load_events, replay
from ffs.config import load_config
from ffs.errors import InputError
from tests.integration.test_second_repo import BAD_PAYMENTS, KEYS, generate
from ffs.transformations import ids

work = Path(sys.argv[1])
raw_tx, raw_labels = generate()
raw_tx.to_parquet(work / "tx.parquet")
raw_labels.to_parquet(work / "labels.parquet")
cfg = load_config()
tx, labels, rejected = load_events(work / "tx.parquet", work / "labels.parquet",
                                   id_types=ids.types(cfg))
kafka.ensure_topics(cfg.kafka)
out = {"rejected": rejected, "transactions": len(tx), "labels": len(labels),
       "partition_keys": list(M.PARTITION_KEYS)}
# the bulk by `ffs replay`'s code, in one timeline; the last day (after every chargeback) by
# the scoring services' API, each payment validated against this repo's columns
cut = labels["label_timestamp"].max()
early, late = tx[tx["event_timestamp"] <= cut], tx[tx["event_timestamp"] > cut]
replay(cfg.kafka, early, labels)
refusals = {}
with EventProducer(cfg.kafka, id_types=ids.types(cfg)) as bus:
    for r in late.itertuples():
        bus.send_transaction({"transaction_id": r.transaction_id,
                              **{k: getattr(r, k) for k in KEYS},
                              "event_timestamp": M.iso(int(r.event_timestamp.timestamp())),
                              "amount": float(r.amount), "declined": int(r.declined),
                              "channel": r.channel})
    for message, _reason, _column in BAD_PAYMENTS:
        try:
            bus.send_transaction(message)
        except InputError as exc:
            refusals[message["transaction_id"]] = str(exc)
        # as they are: what a producer that skips validation sends
        bus.send_raw(cfg.kafka.transactions_topic, M.message_key(message),
                     json.dumps(message).encode())
out["validated"], out["refusals"] = len(late), refusals
print("RESULT " + json.dumps(out, default=str))
'''

ONLINE = r'''
import json, sys
from pathlib import Path
import pandas as pd
from ffs.bus.replay import load_events
from ffs.config import load_config
from ffs.online.client import OnlineClient, redis_client
from tests.integration.test_second_repo import KEYS, mismatches, request_points
from tests.reference import reference_features
from ffs.transformations import ids
from ffs.transformations.features import feature_names

work = Path(sys.argv[1])
cfg = load_config()
tx, labels, _ = load_events(work / "tx.parquet", work / "labels.parquet",
                            id_types=ids.types(cfg))
points = request_points(tx)
ref = reference_features(tx, labels, points)
client = OnlineClient(redis_client(cfg.redis), prefix=cfg.redis.prefix,
                      id_types=ids.types(cfg), max_batch=1000)
rows = [{**{k: getattr(r, k) for k in KEYS},
         "event_timestamp": int(r.event_timestamp.timestamp())} for r in points.itertuples()]
res = client.get_features(rows)
assert res.error is None, res.error
got = pd.DataFrame({n: res.values[n] for n in res.feature_names})
names = feature_names()
out = {"points": len(points), "online_vs_reference": mismatches(got, ref, names),
       "nonzero": {n: int((got[n].fillna(0) != 0).sum()) for n in names}}
# the composite entity read by its key tuples: the stream's state of (account, device) pairs
pairs = tx.drop_duplicates(["account_id", "device_id"]).tail(20)
newest = tx["event_timestamp"].max()
by_pair = client.get_entity_features("account+device",
                                     list(pairs[["account_id", "device_id"]].itertuples(
                                         index=False, name=None)),
                                     as_of=int(newest.timestamp()))
want = reference_features(tx, labels, pairs[KEYS].assign(event_timestamp=newest))
got_pair = pd.DataFrame({n: by_pair.values[n] for n in by_pair.feature_names})
out["pair_names"] = list(by_pair.feature_names)
out["pair_vs_reference"] = mismatches(got_pair, want, list(by_pair.feature_names))
print("RESULT " + json.dumps(out, default=str))
'''


def _result(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _pinot_columns(directory: Path, name: str) -> tuple[list[str], list[str], list[str]]:
    schema = json.loads((directory / f"{name}.schema.json").read_text())
    return ([f["name"] for f in schema["dimensionFieldSpecs"]],
            [f["name"] for f in schema["metricFieldSpecs"]],
            [f["name"] for f in schema["dateTimeFieldSpecs"]])


@pytest.mark.redis
@pytest.mark.spark
@pytest.mark.slow
def test_the_second_repo_streams_for_real_and_is_consistent(tmp_path, env):
    """The payments repo through the production stream: its events on Apache Kafka (replay's
    code, then the validating producer), `ffs stream` (Spark's Kafka connector) into a private
    Redis, malformed messages of its own columns in dead letters, `ffs consistency` clean,
    the online state equal to the brute-force reference, and `ffs pinot generate` writing
    this repo's columns."""
    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.config import KafkaConfig
    from ffs.online.redis_server import RedisServer

    def ffs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ffs.cli", *args], env=env,
                              cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=timeout)

    pinot = ffs("pinot", "generate", "--out", str(tmp_path / "pinot"))
    assert pinot.returncode == 0, pinot.stderr[-3000:]
    with LocalKafka() as broker, RedisServer() as rs:
        env.update({"FFS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                    "FFS_REDIS_URL": rs.url, "FFS_STREAM_CHECKPOINT": str(tmp_path / "ckpt"),
                    "FFS_STREAM_METRICS_PORT": "-1",
                    # several micro-batches: chargebacks meet payments of earlier batches
                    "FFS_STREAM_MAX_EVENTS_PER_BATCH": "1500"})
        env.pop("FFS_CONFIG", None)
        produced = _result(subprocess.run([sys.executable, "-c", PRODUCE, str(tmp_path)],
                                          env=env, cwd=PROJECT_ROOT, capture_output=True,
                                          text=True, timeout=300))
        assert produced["rejected"] == 0 and produced["partition_keys"] == ["account_id"]
        assert produced["transactions"] > 1500 and produced["validated"] > 50
        # the validating producer refuses each bad message with the stream's reason
        for message, reason, column in BAD_PAYMENTS:
            refusal = produced["refusals"].get(message["transaction_id"], "")
            assert f"({reason})" in refusal and repr(column) in refusal, (message, refusal)

        stream = ffs("stream", "--until-idle", "4", timeout=300)
        log = stream.stdout + stream.stderr
        assert stream.returncode == 0, log[-4000:]
        assert "source: Spark's Kafka connector" in log and "caught up and idle" in log
        assert log.count("\nbatch ") >= 2, log[-3000:]

        # dead letters: exactly the bad messages, each with its reason and its column
        bus = KafkaConfig(bootstrap_servers=broker.bootstrap_servers)
        dead = {}
        for rec in kafka.read_all(bus, bus.dead_letter_topic):
            d = json.loads(rec.value)
            dead[json.loads(d["value"])["transaction_id"]] = (d["reason"], d["detail"])
        assert sorted(dead) == sorted(m["transaction_id"] for m, _, _ in BAD_PAYMENTS), dead
        for message, reason, column in BAD_PAYMENTS:
            got_reason, detail = dead[message["transaction_id"]]
            assert got_reason == reason and repr(column) in detail, (message, dead)

        consistency = ffs("consistency", "--samples", "600", timeout=300)
        # the stream's state, read through OnlineClient, against the brute-force reference
        read = _result(subprocess.run([sys.executable, "-c", ONLINE, str(tmp_path)], env=env,
                                      cwd=PROJECT_ROOT, capture_output=True, text=True,
                                      timeout=300))
    report = consistency.stdout + consistency.stderr
    lines = consistency.stdout.splitlines()
    assert (f"events: {produced['transactions']:,} transactions, {produced['labels']:,} "
            f"labels ({len(BAD_PAYMENTS)} refused messages left out)") in lines, report[-3000:]
    total = produced["transactions"] + produced["labels"] + len(BAD_PAYMENTS)
    assert (f"stream decisions: {total:,} messages, 0 differ from the event-only rules"
            in lines), report[-3000:]
    online = next(ln for ln in lines if ln.startswith("online reads at sampled points"))
    # half at free seconds, half the day's own payments (fewer than 300 of them here)
    assert int(re.search(r": ([\d,]+) rows", online).group(1).replace(",", "")) > 300
    assert "mismatch 0 " in online and "missing 0 " in online and "extra 0 " in online, \
        report[-3000:]

    assert read["points"] == 120
    assert read["online_vs_reference"] == [], read["online_vs_reference"]
    assert all(read["nonzero"][n] > 0 for n in WINDOWED + ["account_gap_s"]), read["nonzero"]
    assert read["pair_names"] == ["account_device_payments_7d", "account_device_first_seen_s"]
    assert read["pair_vs_reference"] == [], read["pair_vs_reference"]

    # Pinot: ids are this repo's keys (and its text value column), metrics its number value
    # columns and its features; the star-tree rolls up by the IP, its fraud rate's entity
    values = ["amount", "declined"]
    for name in ("ffs_enriched", "ffs_enriched_agg"):
        dims, metrics, times = _pinot_columns(tmp_path / "pinot", name)
        extra = ["event_hour", "event_day"] if name == "ffs_enriched_agg" else []
        assert dims == ["transaction_id", *KEYS, "channel", "kind", *extra], (name, dims)
        labels = ["is_fraud"] if name == "ffs_enriched" else []
        assert sorted(metrics[:2]) == values and metrics[2:] == FEATURES + labels, metrics
        assert "event_time_ms" in times and "processed_at_ms" in times
    star = json.loads((tmp_path / "pinot" / "ffs_enriched_agg.table.json").read_text())[
        "tableIndexConfig"]["starTreeIndexConfigs"][0]
    assert star["dimensionsSplitOrder"] == ["event_day", "event_hour", "ip"]
    assert {"DISTINCTCOUNTHLL__account_id", "DISTINCTCOUNTHLL__device_id", "SUM__amount",
            "SUM__declined", "AVG__ip_fraud_rate_14d_lag3d"} <= set(star["functionColumnPairs"])

    # last, the enriched topic: every payment's row as of its own time, and the verdict
    enriched = next(ln for ln in lines if ln.startswith("enriched topic"))
    assert f"{produced['transactions']:,} rows" in enriched, enriched
    assert "mismatch 0 " in enriched and "missing 0 " in enriched and "extra 0 " in enriched, \
        report[-3000:]
    assert lines[-1].startswith("CONSISTENT") and consistency.returncode == 0, report[-3000:]
