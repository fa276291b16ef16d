"""`ffs backfill`: features at every transaction into the offline store, validated first.

Two engines, one contract. `--engine local` runs in this process; its driver threads overlap
so the wall time is close to the slowest branch:

    read + normalize ──┬── stage transactions/labels ───────────────┐
                       ├── features (NumPy engine) ─────────────────├─ stage features ─┐
                       └── validate transactions, labels ───────────┴─ validate features┴─ publish

`--engine spark` distributes every step (jobs/batch/spark_backfill.py): normalizing,
validating, computing and staging run in Spark tasks, and the driver sees only counts.

Nothing becomes visible until every fail-severity check has passed: staging directories are
private, and publishing is a rename per partition. Bad rows never stop the run; they are set
aside with their reason in {offline}/rejects/ and counted in the summary.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ffs.config import Config
from ffs.jobs.batch.features_job import check_engine, compute
from ffs.jobs.batch.fits import check_fits
from ffs.jobs.batch.offline_store import OfflineStore
from ffs.transformations import ids as _ids
from ffs.transformations import schema
from ffs.transformations.features import KEY_COLUMNS
from ffs.transformations.ids import IdTypes


@dataclass
class BackfillSummary:
    transactions: int = 0
    labels: int = 0
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    partitions: int = 0
    validation: list[str] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class _Steps:
    """Times named steps (possibly in worker threads) and reports each as it ends."""

    def __init__(self, summary: BackfillSummary, log: Callable[[str], None]):
        self.summary, self.log = summary, log

    def run(self, name: str, fn: Callable, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        took = time.perf_counter() - started
        self.summary.steps.append((name, took))
        self.log(f"  {name}: {took:.1f} s")
        return result


def load_inputs(transactions_path: str | Path, labels_path: str | Path | None,
                id_types: IdTypes = schema.DEFAULT_IDS):
    """Read and normalize both inputs; labels are checked against the transactions."""
    tx = schema.normalize_transactions(schema.read_table(transactions_path), id_types)
    raw_labels = (pd.DataFrame(columns=list(schema.LABEL_COLUMNS)) if labels_path is None
                  else schema.read_table(labels_path))
    return tx, schema.normalize_labels(raw_labels, tx.rows, id_types)


def backfill(cfg: Config, transactions_path: str | Path, labels_path: str | Path | None,
             engine_name: str = "spark", log: Callable[[str], None] = print,
             spark=None, memory_check: bool = True) -> BackfillSummary:
    check_engine(engine_name)
    if memory_check and engine_name == "local":  # Spark's tasks each hold one partition
        check_fits(transactions_path, engine_name, "backfill", log)
    started = time.perf_counter()
    store = OfflineStore(cfg.offline.path)
    summary = BackfillSummary()
    step = _Steps(summary, log)
    docs = Path(cfg.validation.data_docs_dir) if cfg.validation.enabled else None
    staged: dict[str, Path] = {}
    # sortable and unique: the audit trail lists runs in the order they happened
    run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{uuid.uuid4().hex[:6]}"
    try:
        if engine_name == "spark":
            _on_spark(cfg, spark, store, run, staged, step, docs, transactions_path,
                      labels_path)
        else:
            _in_process(cfg, store, run, staged, step, docs, transactions_path, labels_path)
        summary.partitions = step.run(
            "publish", lambda: sum(len(store.publish(n, p)) for n, p in staged.items()))
        for name in ("transactions", "labels"):
            store.publish_rejects(run, name)
    finally:
        for path in staged.values():
            store.discard(path)  # no-op for published batches (their folder is gone)
    summary.seconds = time.perf_counter() - started
    return summary


def _in_process(cfg: Config, store: OfflineStore, run: str, staged: dict[str, Path],
                step: _Steps, docs: Path | None, transactions_path, labels_path) -> None:
    summary = step.summary
    tx, labels = step.run("read + normalize inputs", load_inputs, transactions_path, labels_path,
                          _ids.types(cfg))
    summary.transactions, summary.labels = len(tx.rows), len(labels.rows)
    summary.rejected = {"transactions": tx.reject_summary(), "labels": labels.reject_summary()}
    for name, norm in (("transactions", tx), ("labels", labels)):
        where = store.write_rejects(run, name, norm.rejects)
        if where:
            step.log(f"  {norm.n_rejected:,} {name} row(s) rejected -> {where}: "
                     f"{norm.reject_summary()}")

    def features() -> pd.DataFrame:
        return compute(cfg, tx.rows, labels.rows, None, "local", step.log)

    def stage_events() -> None:
        staged["transactions"] = store.write_staged_pandas("transactions", tx.rows,
                                                           "event_timestamp")
        staged["labels"] = store.write_staged_pandas("labels", labels.rows, "label_timestamp")

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill") as pool:
        computing = pool.submit(step.run, "compute features (local)", features)
        staging = pool.submit(step.run, "stage transactions + labels", stage_events)
        if cfg.validation.enabled:
            _validate(step, "transactions", tx.rows, docs)
            _validate(step, "labels", labels.rows, docs)
        staging.result()
        feats = computing.result()
        base = tx.rows[["transaction_id", *KEY_COLUMNS, "event_timestamp"]]
        table = pd.concat([base, feats], axis=1)
        staging = pool.submit(step.run, "stage features", lambda: staged.__setitem__(
            "features", store.write_staged_pandas("features", table, "event_timestamp")))
        if cfg.validation.enabled:
            _validate(step, "features", table, docs)
        staging.result()


def _on_spark(cfg: Config, spark, store: OfflineStore, run: str, staged: dict[str, Path],
              step: _Steps, docs: Path | None, transactions_path, labels_path) -> None:
    from ffs.jobs.batch.spark import spark_session, warm_up
    from ffs.jobs.batch.spark_backfill import SparkBackfill

    summary = step.summary
    if cfg.validation.enabled:  # while the driver waits on Spark's tasks
        from ffs.validation.run import prepare_in_background

        prepare_in_background()
    if spark is None:
        spark = step.run("start spark", spark_session, cfg.spark, "ffs-backfill", step.log)
        warm_up(spark)
    job = SparkBackfill(cfg, spark, store, run, staged, step.log)
    summary.transactions, tx_rejected = step.run(
        "normalize + stage transactions (spark)", job.normalize_transactions, transactions_path)
    summary.labels, label_rejected = step.run(
        "normalize + stage labels (spark)", job.normalize_labels, labels_path)
    summary.rejected = {"transactions": tx_rejected, "labels": label_rejected}
    if cfg.validation.enabled:
        _validate(step, "transactions", job.read("transactions"), docs)
        _validate(step, "labels", job.read("labels"), docs)
    step.run("compute + stage features (spark)", job.features, summary.transactions)
    if cfg.validation.enabled:
        _validate(step, "features", job.read("features"), docs)


def _validate(step: _Steps, kind: str, frame, docs: Path | None) -> None:
    """Run suite `kind` on `frame` (pandas, or Spark's: checked where it lives) and stop
    here, before anything is published, when a fail-severity check failed."""
    from ffs.validation.run import gate, validate

    report = step.run(f"validate {kind}", validate, kind, frame, docs)
    step.summary.validation.append(report.summary())
    gate(report)
