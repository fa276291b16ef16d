"""A second feature repo, of another shape (tests/fixtures/payments_repo: text ids, other
windows, a 3-day delay, another request function, its own service), runs through apply,
backfill, training set, materialize, online reads and the stream writer with no product code
changed for it: only FFS_FEATURES_REPO points at it. Each path runs in a fresh process, as a
team's jobs would. Its min, max, first-seen and last-value windows (aggregations the shipped repo
does not use) are checked against the stored events directly, and on Spark, the online read and the
stream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "payments_repo"
FEATURES = ["payment_amount", "small_payment", "amount_vs_card_mean", "online_payment",
            "card_payments_5m",
            "card_payments_2h", "card_spend_2h", "card_mean_amount_3d", "card_merchants_6h",
            "card_max_amount_1d", "card_min_amount_2h", "card_first_seen_s",
            "card_previous_amount",
            "merchant_payments_14d_lag3d",
            "merchant_chargeback_rate_14d_lag3d", "card_gap_s"]

RUN = r'''
import json, math, sys
from pathlib import Path
import numpy as np, pandas as pd, redis
from ffs.config import load_config
from jobs.batch.backfill import backfill
from jobs.tools.generate import GenerateSpec, generate_to
from jobs.batch.offline_store import OfflineStore
from jobs.batch.training_set import training_set
from jobs.stream.batch import BatchProcessor
from bus import messages as M
from online.client import OnlineClient
from online.loader import load_state
from online.redis_server import RedisServer
from transformations.features import feature_names

work = Path(sys.argv[1])
gen = generate_to(work / "gen", GenerateSpec(customers=60, terminals=90, days=20, seed=4))
tx = pd.read_parquet(gen.transactions_path)
labels = pd.read_parquet(gen.labels_path)
for frame, cols in ((tx, ("transaction_id", "customer_id", "terminal_id")),
                    (labels, ("transaction_id",))):
    for c in cols:
        frame[c] = c[:4] + "-" + frame[c].astype(str)
tx.to_parquet(work / "tx.parquet"); labels.to_parquet(work / "labels.parquet")
cfg = load_config()
summary = backfill(cfg, work / "tx.parquet", work / "labels.parquet", "local", log=lambda _: None)
store = OfflineStore(cfg.offline.path)
stored_tx, stored_labels = store.read("transactions"), store.read("labels")
table = store.read("features")
newest = stored_tx["event_timestamp"].max()
rng = np.random.default_rng(1)
pick = stored_tx.sample(80, random_state=1)
at = newest - pd.to_timedelta(rng.integers(0, 6 * 3600, len(pick)), unit="s")
own = stored_tx[stored_tx["event_timestamp"] > newest - pd.Timedelta("1d")].sample(
    40, random_state=2)  # points at a payment's own second: ties with t, "strictly before t"
points = pd.concat([
    pd.DataFrame({"customer_id": pick["customer_id"].to_numpy(),
                  "terminal_id": pick["terminal_id"].to_numpy(), "event_timestamp": at}),
    own[["customer_id", "terminal_id", "event_timestamp"]]], ignore_index=True)
expected = training_set(points, cfg).reset_index(drop=True)
names = [n for n in feature_names() if n not in ("payment_amount", "small_payment",
                                                  "amount_vs_card_mean", "online_payment")]

def same(a, b):
    na = a is None or (isinstance(a, float) and math.isnan(a))
    nb = b is None or (isinstance(b, float) and math.isnan(b))
    return (na and nb) or (not na and not nb and math.isclose(float(a), float(b),
                                                                rel_tol=1e-9, abs_tol=1e-9))

def read(conn, prefix):
    client = OnlineClient(conn, prefix=prefix, id_types=cfg.ids.types(), max_batch=1000)
    rows = [{"customer_id": r.customer_id, "terminal_id": r.terminal_id,
             "event_timestamp": int(r.event_timestamp.timestamp())} for r in points.itertuples()]
    res = client.get_features(rows)
    return [(j, n) for j in range(len(rows)) for n in names
            if not same(res.values[n][j], expected.at[j, n])]

brute = []  # the largest and smallest amounts, straight from the stored events
for j, r in enumerate(points.itertuples()):
    mine = stored_tx[stored_tx["customer_id"] == r.customer_id]
    for name, span, pick in (("card_max_amount_1d", "1d", max), ("card_min_amount_2h", "2h", min)):
        inside = mine[(mine["event_timestamp"] > r.event_timestamp - pd.Timedelta(span))
                      & (mine["event_timestamp"] <= r.event_timestamp)]["amount"].tolist()
        want = pick(inside) if inside else None
        if not same(expected.at[j, name], want):
            brute.append((j, name, expected.at[j, name], want))
    first = mine[(mine["event_timestamp"] > r.event_timestamp - pd.Timedelta("3d"))
                 & (mine["event_timestamp"] <= r.event_timestamp)]["event_timestamp"]
    want = (r.event_timestamp - first.min()).total_seconds() if len(first) else None
    if not same(expected.at[j, "card_first_seen_s"], want):
        brute.append((j, "card_first_seen_s", expected.at[j, "card_first_seen_s"], want))
    before = mine[(mine["event_timestamp"] > r.event_timestamp - pd.Timedelta("3d"))
                  & (mine["event_timestamp"] < r.event_timestamp)]
    latest = before[before["event_timestamp"] == before["event_timestamp"].max()]
    want = latest["amount"].max() if len(before) else None
    if not same(expected.at[j, "card_previous_amount"], want):
        brute.append((j, "card_previous_amount", expected.at[j, "card_previous_amount"], want))
spark_frame = training_set(points, cfg, engine="spark").reset_index(drop=True)
spark_bad = [(j, n) for j in range(len(points)) for n in names
             if not same(spark_frame.at[j, n], expected.at[j, n])]
out = {"brute_mismatches": brute[:5], "spark_mismatches": spark_bad[:5],
       "features": feature_names(),
       "table_columns": list(table.columns),
       "rows": summary.transactions, "nonzero": {n: int((expected[n].fillna(0) != 0).sum())
                                                  for n in names}}
with RedisServer() as server:
    conn = redis.Redis.from_url(server.url)
    load_state(conn, stored_tx, stored_labels, prefix="load")
    out["online_mismatches"] = read(conn, "load")[:5]
    scored = OnlineClient(conn, prefix="load", id_types=cfg.ids.types()).get_features(
        [{"customer_id": "cust-new", "terminal_id": "term-x", "transaction_id": "tran-new",
          "event_timestamp": int(newest.timestamp()), "amount": 7.5, "channel": "online"}])
    out["new_card"] = {n: scored.values[n][0] for n in (
        "card_first_seen_s", "card_max_amount_1d", "card_min_amount_2h", "card_payments_5m",
        "card_previous_amount", "online_payment")}
    # the HTTP server, on the same state: the repo's request field passes through
    import asyncio, httpx
    from online.server import create_app
    hcfg = load_config(); hcfg.redis.url = server.url; hcfg.redis.prefix = "load"
    body = {"feature_service": "fraud_v2",
            "entities": {"customer_id": ["cust-new"], "terminal_id": ["term-x"]},
            "request_data": {"transaction_id": ["tran-new"],
                             "event_timestamp": [int(newest.timestamp())], "amount": [7.5],
                             "channel": ["online"]}}
    async def post():
        transport = httpx.ASGITransport(app=create_app(hcfg))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/get-online-features", json=body)
    resp = asyncio.run(post())
    doc = resp.json()
    out["http"] = {"status": resp.status_code, **{
        name: col["values"][0] for name, col in zip(doc["metadata"]["feature_names"],
                                                    doc["results"])
        if name in out["new_card"]}}
    scfg = load_config(); scfg.redis.prefix = "stream"; scfg.stream.enrich = False
    scfg.stream.allowed_lateness_s = 40 * 86400
    events = [(int(r.event_timestamp.timestamp()), 0, scfg.kafka.transactions_topic,
               M.transaction_message(M.Transaction(r.transaction_id, r.customer_id,
                                                   r.terminal_id,
                                                   int(r.event_timestamp.timestamp()),
                                                   float(r.amount))))
              for r in stored_tx.itertuples()]
    events += [(int(r.label_timestamp.timestamp()), 1, scfg.kafka.labels_topic,
                M.label_message(M.Label(r.transaction_id, int(r.is_fraud),
                                        int(r.label_timestamp.timestamp()))))
               for r in stored_labels.itertuples()]
    events.sort(key=lambda e: (e[0], e[1]))
    rows = {"topic": [e[2] for e in events], "partition": [0] * len(events),
            "offset": list(range(len(events))), "key": [None] * len(events),
            "value": [e[3] for e in events], "timestamp_ms": [0] * len(events)}
    rep = BatchProcessor(scfg, conn, lambda *a: None, lambda: None).process(0, rows)
    out["stream_dead"] = rep.dead_letters
    out["stream_mismatches"] = read(conn, "stream")[:5]
    conn.close()
print("RESULT " + json.dumps(out))
'''


@pytest.fixture()
def env(tmp_path):
    repo = tmp_path / "payments_repo"
    shutil.copytree(FIXTURE, repo, ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    return {**os.environ, "FFS_FEATURES_REPO": str(repo), "FFS_IDS_TRANSACTION_ID": "string",
            "FFS_IDS_CUSTOMER_ID": "string", "FFS_IDS_TERMINAL_ID": "string",
            "FFS_OFFLINE_PATH": str(tmp_path / "offline"), "FFS_VALIDATION_ENABLED": "false"}


@pytest.mark.redis
@pytest.mark.spark
def test_a_second_repo_runs_every_path_with_no_product_change(tmp_path, env):
    check = subprocess.run([sys.executable, "-m", "ffs.cli", "apply", "--check"], env=env,
                           cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "applied payments_repo: service fraud_v2, 12 windowed and 4 request" in check.stdout
    listing = subprocess.run([sys.executable, "-m", "ffs.cli", "features"], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert "feature service fraud_v2: 16 features" in listing.stdout, listing.stdout
    run = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], env=env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["features"] == FEATURES
    assert [c for c in out["table_columns"] if c in FEATURES] == FEATURES
    assert out["rows"] > 1000
    assert out["brute_mismatches"] == [] and out["spark_mismatches"] == []
    assert out["online_mismatches"] == [] and out["stream_mismatches"] == []
    assert out["stream_dead"] == {}
    # a card never seen, scored with its first payment: that payment is in its windows
    assert out["new_card"] == {"card_first_seen_s": 0.0, "card_max_amount_1d": 7.5,
                               "card_min_amount_2h": 7.5, "card_payments_5m": 1,
                               "card_previous_amount": None, "online_payment": 1}
    assert out["http"] == {"status": 200, **out["new_card"]}
    # real windows: every windowed feature is non-zero somewhere among the points
    assert all(v > 0 for n, v in out["nonzero"].items() if n != "card_payments_5m"), out
