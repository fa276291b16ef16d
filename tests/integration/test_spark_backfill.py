"""The distributed backfill (`--engine spark`) keeps the data model's every rule: the same
rows staged, the same rows refused for the same reasons, as the in-process engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.errors import InputError
from ffs.jobs.batch import spark_inputs
from ffs.jobs.batch.backfill import backfill
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.jobs.tools.generate import GenerateSpec, generate_to
from ffs.transformations import schema

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def dirty(tmp_path_factory) -> tuple[Path, Path]:
    """Generated traffic spread over two Parquet files, with bad and repeated rows in both,
    and labels with every kind of fault."""
    out = tmp_path_factory.mktemp("dirty")
    made = generate_to(out / "gen", GenerateSpec(customers=60, terminals=90, days=8, seed=5))
    tx = schema.read_table(made.transactions_path)
    # every payment labelled two days on (the generator's own labels are few in 8 days)
    labels = pd.DataFrame({"transaction_id": tx["transaction_id"], "is_fraud": tx["tx_fraud"],
                           "label_timestamp": tx["event_timestamp"] + pd.Timedelta(days=2)})
    half = len(tx) // 2
    first, second = tx.iloc[:half].copy(), tx.iloc[half:].copy()
    bad = first.head(4).copy()
    bad["transaction_id"] = [10**9, 10**9 + 1, 10**9 + 2, 10**9 + 3]
    bad["amount"] = [-1.0, np.nan, 5.0, 7.0]
    bad.loc[bad.index[3], "customer_id"] = np.nan  # a missing key
    # a later copy of a payment of the first file (refused), and a valid copy of one whose
    # first copy is refused (the first *valid* copy wins, across files)
    later = first.iloc[[10]].assign(amount=first["amount"].iloc[10] + 1.0)
    revived = bad.iloc[[0]].assign(amount=3.0)
    folder = out / "transactions"
    folder.mkdir()
    pd.concat([first, bad]).to_parquet(folder / "a.parquet", index=False)
    pd.concat([second, later, revived]).to_parquet(folder / "b.parquet", index=False)

    known = labels.head(6).copy()
    faults = pd.concat([
        known.iloc[[0]],  # the same label twice: counted once
        known.iloc[[1]].assign(is_fraud=1 - known["is_fraud"].iloc[1]),  # conflicting
        known.iloc[[2]].assign(transaction_id=10**12),  # unknown payment
        known.iloc[[3]].assign(is_fraud=2),
        known.iloc[[4]].assign(label_timestamp=pd.Timestamp("2000-01-01", tz="UTC")),
    ])
    labels_path = out / "labels.parquet"
    pd.concat([labels, faults]).to_parquet(labels_path, index=False)
    return folder, labels_path


def _cfg(root: Path) -> Config:
    cfg = Config()
    cfg.offline.path = str(root)
    cfg.validation.enabled = False  # the gate has its own tests; this one compares rules
    cfg.spark.buckets = 3
    return cfg


def _table(store: OfflineStore, name: str, key: list[str]) -> pd.DataFrame:
    return store.read(name).sort_values(key).reset_index(drop=True)


def _rejects(root: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(root / "rejects" / f"{name}.parquet")
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_spark_normalizes_stages_and_refuses_exactly_as_the_local_engine(spark, dirty,
                                                                          tmp_path):
    tx_path, labels_path = dirty
    local = backfill(_cfg(tmp_path / "local"), tx_path, labels_path, "local",
                     log=lambda _: None)
    distributed = backfill(_cfg(tmp_path / "spark"), tx_path, labels_path, "spark",
                           log=lambda _: None, spark=spark)

    assert local.rejected["transactions"] == {
        "amount is negative": 1, "missing amount": 1, "missing customer_id": 1,
        "duplicate transaction_id": 1}
    assert set(local.rejected["labels"]) == {
        "duplicate label", "conflicting labels for one transaction at one time",
        "label for unknown transaction_id", "is_fraud must be 0 or 1",
        "label_timestamp before the transaction"}
    assert distributed.rejected == local.rejected
    assert (distributed.transactions, distributed.labels) == (local.transactions, local.labels)
    for name in ("transactions", "labels"):
        pd.testing.assert_frame_equal(_rejects(tmp_path / "spark", name),
                                      _rejects(tmp_path / "local", name))

    ours, theirs = OfflineStore(tmp_path / "spark"), OfflineStore(tmp_path / "local")
    for name, key in (("transactions", ["transaction_id"]),
                      ("labels", ["transaction_id", "label_timestamp"]),
                      ("features", ["transaction_id"])):
        want = _table(theirs, name, key)
        pd.testing.assert_frame_equal(_table(ours, name, key)[want.columns], want)
    # the revived payment is the copy from the second file, the later copy is refused
    staged = _table(ours, "transactions", ["transaction_id"]).set_index("transaction_id")
    assert staged.loc[10**9, "amount"] == 3.0


def test_spark_reads_csv_as_the_local_engine_does(spark, dirty, tmp_path):
    tx_path, labels_path = dirty
    csv = tmp_path / "tx.csv"
    pd.read_parquet(tx_path).to_csv(csv, index=False)
    local = backfill(_cfg(tmp_path / "local"), csv, labels_path, "local", log=lambda _: None)
    distributed = backfill(_cfg(tmp_path / "spark"), csv, labels_path, "spark",
                           log=lambda _: None, spark=spark)
    assert distributed.rejected == local.rejected
    want = _table(OfflineStore(tmp_path / "local"), "features", ["transaction_id"])
    got = _table(OfflineStore(tmp_path / "spark"), "features", ["transaction_id"])
    pd.testing.assert_frame_equal(got[want.columns], want)


def test_spark_without_labels_and_with_a_missing_column(spark, dirty, tmp_path):
    tx_path, _ = dirty
    summary = backfill(_cfg(tmp_path / "a"), tx_path, None, "spark", log=lambda _: None,
                       spark=spark)
    assert summary.labels == 0 and summary.transactions > 0
    lacking = tmp_path / "lacking.parquet"
    pd.read_parquet(tx_path).drop(columns=["amount"]).to_parquet(lacking)
    with pytest.raises(InputError, match=r"missing column\(s\) \['amount'\]"):
        backfill(_cfg(tmp_path / "b"), lacking, None, "spark", log=lambda _: None,
                 spark=spark)
    assert not OfflineStore(tmp_path / "b").exists("transactions")


def test_a_retried_task_replaces_its_rejects_rather_than_adding_to_them(tmp_path):
    bad = pd.DataFrame({"transaction_id": ["x"], "reason": ["bad transaction_id"]})
    spark_inputs._write_rejects(bad, str(tmp_path), 3)
    spark_inputs._write_rejects(bad, str(tmp_path), 3)  # the same partition, run again
    spark_inputs._write_rejects(bad.assign(transaction_id="y"), str(tmp_path), 4)
    assert spark_inputs.reject_counts(tmp_path) == {"bad transaction_id": 2}
    spark_inputs.merge_rejects(tmp_path, tmp_path / "all.parquet")
    assert sorted(pd.read_parquet(tmp_path / "all.parquet")["transaction_id"]) == ["x", "y"]


def test_a_local_session_lists_a_staged_table_of_many_days_without_a_spark_job(spark,
                                                                               tmp_path):
    staged = tmp_path / "staged"
    days = [str(d.date()) for d in pd.date_range("2018-04-01", periods=40)]
    for day in days:  # 40 day folders: past Spark's default of 32 for a listing job
        (staged / f"event_date={day}").mkdir(parents=True)
        pd.DataFrame({"x": [1]}).to_parquet(staged / f"event_date={day}" / "part-0.parquet")
    sc = spark.sparkContext
    sc.setJobGroup("listing-test", "read a staged table")
    try:
        read = spark.read.parquet(str(staged))  # the listing happens here, at the read
    finally:
        sc.setJobGroup("", "")
    st = sc.statusTracker()  # (the read's one other job reads a footer for the schema)
    tasks = [st.getStageInfo(s).numTasks for j in st.getJobIdsForGroup("listing-test")
             for s in st.getJobInfo(j).stageIds]
    assert not any(n >= len(days) for n in tasks), f"a listing job ran: {tasks} task(s)"
    assert read.select("event_date").distinct().count() == 40


def test_only_a_local_master_lists_on_the_driver():
    from ffs.jobs.batch.spark import master_settings

    key = "spark.sql.sources.parallelPartitionDiscovery.threshold"
    assert key in master_settings("local[2]") and key in master_settings("local[*]")
    assert master_settings("k8s://https://kube:6443") == {}
    assert master_settings("spark://head:7077") == {}
