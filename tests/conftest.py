"""Shared fixtures: small hand-made events, the handbook data (skipped with the reason when
absent), one local Spark session, one local Apache Kafka and one local PostgreSQL per test
process (`make test` runs two), headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.browser import chrome  # noqa: F401  (the headless Chromium fixture, for every test)

HANDBOOK = Path(os.environ.get("FFS_HANDBOOK", Path(__file__).resolve().parents[2] / "shared"
                               / "data" / "handbook" / "transactions.parquet"))


def text_ids(cfg=None):
    """A config (default: Config()) with every id column declared string, for tests whose
    events carry text ids such as "c1" or "t-1"."""
    from ffs.config import Config, IdsConfig
    from ffs.transformations.features import KEY_COLUMNS

    cfg = cfg or Config()
    cfg.ids = IdsConfig("string", {k: "string" for k in KEY_COLUMNS})
    return cfg


def utc(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def random_events(seed: int, n: int = 300, customers: int = 5, terminals: int = 6, days: int = 40):
    """Random transactions with many same-second ties, labels with delays and revisions."""
    rng = np.random.default_rng(seed)
    t0 = utc("2024-01-01")
    secs = rng.integers(0, days * 86400, n)
    secs[::7] = secs[::7] // 600 * 600  # force ties
    secs[1::9] = secs[::9][: len(secs[1::9])]
    tx = pd.DataFrame({
        "transaction_id": np.arange(n),
        "event_timestamp": t0 + pd.to_timedelta(np.sort(secs), unit="s"),
        "customer_id": rng.integers(0, customers, n),
        "terminal_id": rng.integers(0, terminals, n),
        "amount": np.round(rng.uniform(0, 100, n), 2),
    })
    picked = tx.sample(n // 4, random_state=seed)
    labels = pd.DataFrame({
        "transaction_id": picked["transaction_id"].to_numpy(),
        "is_fraud": rng.integers(0, 2, len(picked)),
        "label_timestamp": picked["event_timestamp"].reset_index(drop=True)
        + pd.to_timedelta(rng.integers(0, 20 * 86400, len(picked)), unit="s"),
    })
    revised = labels.sample(max(1, len(labels) // 8), random_state=seed + 1).copy()
    revised["label_timestamp"] += pd.Timedelta(days=3)
    revised["is_fraud"] = 1 - revised["is_fraud"]
    labels = pd.concat([labels, revised], ignore_index=True)
    labels["label_timestamp"] = pd.to_datetime(labels["label_timestamp"], utc=True)
    points = pd.DataFrame({
        "customer_id": rng.integers(0, customers + 1, 150),
        "terminal_id": rng.integers(0, terminals + 1, 150),
        "event_timestamp": t0 + pd.to_timedelta(rng.integers(-86400, (days + 45) * 86400, 150),
                                                unit="s"),
        "amount": rng.uniform(0, 50, 150),
    })
    points = pd.concat([points, tx[["customer_id", "terminal_id", "event_timestamp", "amount"]]],
                       ignore_index=True)
    return tx, labels, points


@pytest.fixture(scope="session")
def handbook_path() -> Path:
    if not HANDBOOK.exists():
        pytest.skip(f"handbook data not found at {HANDBOOK} (it lives in ../shared/data/handbook; "
                    f"set FFS_HANDBOOK to point elsewhere)")
    return HANDBOOK


@pytest.fixture(scope="session")
def spark():
    from ffs.config import SparkConfig
    from ffs.jobs.batch.spark import spark_session

    session = spark_session(SparkConfig(shuffle_partitions=4, buckets=3, driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_broker():
    """One real Apache Kafka (KRaft, free ports, temporary data) per test process; tests
    keep apart by topic names of their own. Started here, never skipped for want of it."""
    from ffs.bus.broker import LocalKafka

    with LocalKafka(log=print) as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres():
    """One private PostgreSQL (free port, temporary cluster, password auth) per test
    process; tests keep apart by Feast project names of their own. Never skipped for want of
    it: without the server binaries it fails with the fix (`make setup`)."""
    from ffs.postgres import LocalPostgres

    with LocalPostgres() as server:
        yield server
