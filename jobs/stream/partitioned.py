"""One micro-batch of the stream run by its partitions in parallel, on Spark's executors: each
task writes its own Kafka partition's events, then each task reads and publishes its own
partition's enriched rows. Only small summaries come back to the driver (counts, the
partitions' progress, late anchors, conflicting copies), so a batch is never collected, and
throughput grows with cores, executors and Redis shards.

The rules are the driver's (jobs/stream/batch.py, jobs/stream/rules.py); what makes them hold
when tasks run at once:

- Judging time is per topic partition already (each event against its own partition's newest
  accepted time before it), so a task judges its partition alone, from the progress the
  driver read before the batch. The enrichment pass judges again from the same progress and
  the same clock, so it keeps exactly the events the write pass kept.
- Writes are idempotent and each is one atomic script, and a record's place is its event time:
  tasks writing one terminal at once leave the state a read cannot tell from one writer's
  (records of one second may swap running totals, as they do between arrival orders).
- Trimming needs the whole batch's oldest read time, which no task sees: the driver allows it
  only when every partition of the transactions topic has progress (then nothing older than
  the watermark minus the lateness is accepted); otherwise this batch keeps everything.
- A late flag means an event arrived behind one already enriched. Tasks running at once flag
  events behind a same-batch event of another partition too; those cannot be behind an
  earlier batch when they are at or after the newest event time of all earlier batches, so
  only the others anchor corrections.
- The same bound keeps corrections to what needs them: a late event or a label changes the
  enriched rows of earlier batches only up to their newest event time; this batch's rows
  are read after all its writes anyway.
- Labels: their tasks run after every transaction of the batch is written (the two topics'
  partitions are separate tasks), and apply them; a label whose transaction is still unknown
  waits, and the driver's pass applies the waiting ones it can (or dead-letters those past
  the lateness, as one process does).
- Enrichment runs after every write and label of the batch. The corrections (stored events
  after a late event or label) are read on the driver; a task leaves out its events among them
  so that each is published once.

What differs from one process: of two copies of one transaction_id with different content on
different partitions in one batch (a producer bug: one id under two keys), the one written
first stays, where one process keeps the older Kafka timestamp's. Either way the other is a
conflict dead letter and nothing is counted twice.

`Tasks` hides where tasks run: Spark's mapInArrow (`SparkTasks`, used by jobs/stream/job.py)
or, in tests/integration/test_stream_partitioned.py, threads over a batch split by partition.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ffs.jobs.stream.batch import BatchProcessor, BatchReport

COLUMNS = ("topic", "partition", "offset", "key", "value", "timestamp_ms")
_COUNTS = ("messages", "transactions", "labels", "written", "duplicates", "labels_written",
           "stale_labels", "enriched")


@dataclass
class Plan:
    """What the driver decided for the whole batch, sent to every task."""

    batch_id: int
    now_ms: int
    progress: dict[str, int]  # "topic:partition" -> newest accepted event time before
    trim: bool
    reads_from: int | None
    newest_before: int | None  # the newest event time of all earlier batches
    keep_freshness: bool = True
    conflicts: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    corrections: list[str] = field(default_factory=list)  # transaction ids the driver reads


class Tasks(Protocol):
    def run(self, phase: str, plan: Plan, topic: str) -> list[dict]:
        """Runs PHASES[phase] over every partition of `topic` in the batch; one summary per
        task."""


def write_phase(proc: BatchProcessor, plan: Plan, rows: dict[str, list]) -> dict:
    """A task's events: transactions written, labels applied (or left waiting), dead letters
    and the applied labels' enriched rows published and flushed."""
    rep = BatchReport(plan.batch_id, messages=len(rows["offset"]))
    txs, labels, after = proc._parse(rows, plan.now_ms, plan.progress, rep)
    ok = proc._write_transactions(txs, plan.now_ms, rep, None, keep=(plan.trim, plan.reads_from))
    conflicts = [(src[1], src[2]) for tx, src in txs if tx not in ok]
    newest = plan.newest_before
    late = [tx for tx in proc._late if newest is not None and tx.t <= newest]
    proc._label_anchors = []
    applied = proc._apply_labels(proc._label_todo(labels, waiting=False), None, plan.now_ms,
                                 rep)
    proc._publish_labels(applied, labels, plan.now_ms)
    rep.labels_written = len(applied)
    proc.flush()
    mine = {tp for tp in after if after[tp] != plan.progress.get(tp)}
    return {**{k: getattr(rep, k) for k in _COUNTS}, "dead_letters": rep.dead_letters,
            "after": {tp: after[tp] for tp in mine}, "conflicts": conflicts,
            "anchors": [[*k, v] for k, v in proc._late_anchors(late).items()]
            + [list(a) for a in proc._label_anchors],
            "freshness": rep.freshness_s if plan.keep_freshness else []}


def enrich_phase(proc: BatchProcessor, plan: Plan, rows: dict[str, list]) -> dict:
    """A task's accepted transactions (no conflicting copy, none the driver corrects), read as
    of their own times and published."""
    txs, _labels, _after = proc._parse(rows, plan.now_ms, plan.progress,
                                       BatchReport(plan.batch_id), dead_letters=False)
    conflicts, fixed = set(map(tuple, plan.conflicts)), set(plan.corrections)
    batch, in_fixes = [], 0
    for tx, src in txs:
        if (src[1], src[2]) in conflicts:
            continue
        if tx.transaction_id in fixed:
            in_fixes += 1
            continue
        batch.append(tx)
    proc._source_ts = {tx.transaction_id: src[4] for tx, src in txs}
    proc._enrich(batch, plan.now_ms)
    proc.flush()
    return {"enriched": len(batch), "in_corrections": in_fixes}


PHASES: dict[str, Callable[[BatchProcessor, Plan, dict], dict]] = {
    "write": write_phase, "enrich": enrich_phase}


class PartitionedBatch:
    """The driver's side: the plan, three task passes (payments, labels, enrichment), the
    labels that waited, the corrections."""

    def __init__(self, proc: BatchProcessor, partitions: Callable[[], list[str]]):
        """partitions(): each "topic:partition" of the transactions topic that holds data
        (Kafka's watermarks): trimming waits until each has progress."""
        self.proc, self.partitions = proc, partitions
        self.keep_freshness = True

    def process(self, batch_id: int, tasks: Tasks) -> BatchReport:
        proc, cfg = self.proc, self.proc.cfg
        started = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        rep = BatchReport(batch_id)
        progress = proc._progress_before(batch_id)
        wm_before = min(progress.values()) if progress else None
        tx_topic = proc.k.transactions_topic
        tx_progress = [v for tp, v in progress.items() if tp.rsplit(":", 1)[0] == tx_topic]
        known = wm_before is not None and set(self.partitions()) <= set(progress)
        reads_from = None if wm_before is None or not known else \
            wm_before - cfg.stream.allowed_lateness_s
        plan = Plan(batch_id, now_ms, progress, trim=known, reads_from=reads_from,
                    newest_before=max(tx_progress) if tx_progress else None,
                    keep_freshness=self.keep_freshness)

        after = dict(progress)
        anchors: dict[tuple[str, str], int] = {}
        # transactions first, then labels: a label whose transaction is written by a task
        # running at the same time would wait, and be applied twice
        summaries = tasks.run("write", plan, tx_topic)
        summaries += tasks.run("write", plan, proc.k.labels_topic)
        for s in summaries:
            for k in _COUNTS:
                setattr(rep, k, getattr(rep, k) + s[k])
            for reason, n in s["dead_letters"].items():
                rep.dead_letters[reason] = rep.dead_letters.get(reason, 0) + n
            for tp, t in s["after"].items():
                after[tp] = max(t, after.get(tp, t))
            plan.conflicts += [tuple(c) for c in s["conflicts"]]
            proc._add_anchors(anchors, s["anchors"])
            rep.freshness_s += s["freshness"]
        wm_after = min(after.values()) if after else None

        # the labels that waited, this batch's among them, now that every write is done
        proc._label_anchors = []
        applied = proc._apply_labels(proc._label_todo([]), wm_after, now_ms, rep)
        proc._add_anchors(anchors, proc._label_anchors)
        proc._publish_labels(applied, [], now_ms)
        rep.labels_written += len(applied)

        if cfg.stream.enrich:
            # only events of earlier batches were enriched before: none is after their newest
            # time, and this batch's own are read by its enrichment pass
            until = plan.newest_before
            anchors = {k: v for k, v in anchors.items() if until is not None and v <= until}
            fixes = proc._affected(anchors, until)
            plan.corrections = sorted({tx.transaction_id for tx in fixes})
            in_batch = 0
            for s in tasks.run("enrich", plan, tx_topic):
                rep.enriched += s["enriched"]
                in_batch += s["in_corrections"]
            proc._source_ts = {}
            proc._enrich(fixes, now_ms)
            rep.enriched += in_batch
            rep.corrections = len(fixes) - in_batch
        rep.labels_waiting = proc.redis.zcard(proc.pending_key)
        proc.flush()
        proc._save_progress(batch_id, progress, after)
        rep.watermark = wm_after
        rep.seconds = time.perf_counter() - started
        return rep


# ---- on an executor ------------------------------------------------------------------------

_WORKER: dict[str, BatchProcessor] = {}
_SECRETS = (("redis", "password"), ("kafka", "sasl_password"))


def task_config(cfg) -> bytes:
    """The config the tasks build their clients from, as it travels in their closures: on a
    local master as it is; to a cluster's executors without its secrets, which travel in
    Spark's RPC and must not: an executor takes them from its own environment or config
    file (FFS_REDIS_PASSWORD, FFS_KAFKA_SASL_PASSWORD, FFS_CONFIG), as the driver did."""
    import copy
    import pickle

    if not cfg.spark.master.startswith("local"):
        cfg = copy.deepcopy(cfg)
        for section, key in _SECRETS:
            setattr(getattr(cfg, section), key, None)
    return pickle.dumps(cfg)


def _with_own_secrets(cfg, needed: bool):
    """cfg with the secrets the driver did not send filled from this executor's settings."""
    if not needed:
        return cfg
    from ffs.config import load_config

    own = load_config()
    for section, key in _SECRETS:
        if getattr(getattr(cfg, section), key) is None:
            setattr(getattr(cfg, section), key, getattr(getattr(own, section), key))
    return cfg


def repo_fingerprint() -> str:
    """Of the compiled repo this process runs: an executor must run the driver's."""
    from ffs.transformations.features import COMPILED

    return hashlib.sha256(COMPILED.to_json().encode()).hexdigest()[:16]


def worker_processor(cfg_blob: bytes, fingerprint: str) -> BatchProcessor:
    """This Python worker's processor (its Redis connections and Kafka producer), built once
    and kept while Spark reuses the worker."""
    import dataclasses
    import pickle

    from ffs.bus.producer import EventProducer
    from ffs.errors import TerminalError
    from ffs.jobs.stream.job import STREAM_REDIS_TIMEOUT_MS
    from ffs.online.client import redis_client

    key = hashlib.sha256(cfg_blob).hexdigest()
    proc = _WORKER.get(key)
    if proc is None:
        mine = repo_fingerprint()
        if mine != fingerprint:
            raise TerminalError(f"this executor compiled another feature repo ({mine}) than "
                                f"the driver ({fingerprint}): give executors the driver's "
                                f"features.repo (FFS_FEATURES_REPO) and product version")
        cfg = pickle.loads(cfg_blob)
        cfg = _with_own_secrets(cfg, not cfg.spark.master.startswith("local"))
        r = redis_client(dataclasses.replace(cfg.redis, timeout_ms=STREAM_REDIS_TIMEOUT_MS))
        producer = EventProducer(cfg.kafka, validate=False)
        proc = BatchProcessor(cfg, r, producer.send_raw, producer.flush, producer.send_raw)
        _WORKER.clear()  # one config per worker: a new one replaces the old
        _WORKER[key] = proc
    return proc


def run_task(cfg_blob: bytes, fingerprint: str, phase: str, plan_json: str,
             batches: Iterable) -> dict:
    """One Spark task: its partition's Arrow record batches through one phase."""
    import pyarrow as pa

    batches = list(batches)
    if batches:
        table = pa.Table.from_batches(batches)
        rows = {c: table.column(c).to_pylist() for c in COLUMNS}
    else:
        rows = {c: [] for c in COLUMNS}
    proc = worker_processor(cfg_blob, fingerprint)
    return PHASES[phase](proc, Plan(**json.loads(plan_json)), rows)


class SparkTasks:
    """The tasks of one micro-batch on Spark: one per Kafka partition of its DataFrame (Spark's
    Kafka source gives each topic partition its own), through mapInArrow so that the raw rows
    reach the Python workers as Arrow; only each task's one-line summary is collected."""

    def __init__(self, df, cfg_blob: bytes, fingerprint: str):
        self.df, self.cfg_blob, self.fingerprint = df, cfg_blob, fingerprint

    def run(self, phase: str, plan: Plan, topic: str) -> list[dict]:
        blob, fingerprint, plan_json = self.cfg_blob, self.fingerprint, json.dumps(asdict(plan))

        def task(batches):
            import pyarrow as pa

            from ffs.jobs.stream.partitioned import run_task

            out = run_task(blob, fingerprint, phase, plan_json, batches)
            yield pa.RecordBatch.from_pydict({"summary": [json.dumps(out)]})

        # the other topic's partitions are empty after the filter: their tasks are trivial
        rows = self.df.where(self.df.topic == topic).mapInArrow(task, "summary string")
        return [json.loads(r.summary) for r in rows.collect()]
