"""`ffs stream`: Spark Structured Streaming from the transactions and labels topics into the
online state, with enriched rows and dead letters published back to the bus.

The query is stateless (window state lives in Redis, see REFERENCE: Python stateful operators
keep up with ~50 events/s here). Each micro-batch runs on Spark's executors, one task per
Kafka partition, writing and then enriching in parallel (jobs/stream/partitioned.py;
stream.batches_on), or wholly on the driver (jobs/stream/batch.py); "auto" picks the
executors on a cluster master and the driver on a local one; "adaptive" runs a batch on the
driver, or as tasks when the batch before it was large (a backlog). Both ways keep their
progress in Redis, so consecutive batches may take either. Offsets live in the checkpoint;
a killed job restarts from it and re-runs the uncommitted batch, whose writes are
idempotent.

Source: Spark's own Kafka connector (spark-sql-kafka, resolved by `make setup` and put on
spark.jars by jobs/batch/spark.py).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ffs.bus import kafka as bus
from ffs.config import Config
from ffs.errors import ConfigError, TerminalError, TransientError

if TYPE_CHECKING:
    from ffs.jobs.stream.partitioned import PartitionedBatch

COLUMNS = ("topic", "partition", "offset", "key", "value", "timestamp_ms")
STREAM_REDIS_TIMEOUT_MS = 30_000
NATIVE_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"


@dataclass
class StreamSummary:
    batches: int = 0
    events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    enriched: int = 0
    corrections: int = 0
    seconds: float = 0.0
    stopped_because: str = ""

    def line(self) -> str:
        dead = sum(self.dead_letters.values())
        return (f"{self.batches} batches, {self.events:,} events, {dead:,} dead letters "
                f"{dict(sorted(self.dead_letters.items()))}, {self.enriched:,} enriched "
                f"(+{self.corrections:,} corrections) in {self.seconds:.1f} s; stopped: "
                f"{self.stopped_because}")


def native_kafka_available(spark) -> bool:
    try:  # spark.jars live in the context class loader, which Class.forName does not ask
        spark._jvm.java.lang.Thread.currentThread().getContextClassLoader().loadClass(
            NATIVE_PROVIDER)
        return True
    except Exception:  # Py4JJavaError: ClassNotFoundException
        return False


def _source(spark, cfg: Config, log: Callable[[str], None]):
    """Spark's own Kafka source: offsets per topic-partition in the checkpoint, a batch bounded
    by stream.max_events_per_batch, and failOnDataLoss so that a checkpoint from another
    cluster or a recreated topic stops the job instead of skipping data. Its consumers'
    fetches wait stream.fetch_max_wait_ms at the broker for data to come, not Kafka's 500 ms:
    the last batch before a lull waited that several times over."""
    from pyspark.sql import functions as F

    k, s = cfg.kafka, cfg.stream
    if not native_kafka_available(spark):
        raise TerminalError("Spark's Kafka connector is not on the classpath: run `make setup` "
                            "(it resolves spark-sql-kafka from Maven Central) or list its jars "
                            "in spark.jars (FFS_SPARK_JARS)")
    topics = [k.labels_topic, k.transactions_topic]
    reader = (spark.readStream.format("kafka").option("subscribe", ",".join(topics))
              .option("startingOffsets", s.starting_offsets)
              .option("failOnDataLoss", "true"))
    if s.max_events_per_batch > 0:
        reader = reader.option("maxOffsetsPerTrigger", str(s.max_events_per_batch))
    for key, value in connector_options(k).items():
        reader = reader.option(key, value)
    if s.fetch_max_wait_ms > 0:
        reader = reader.option("kafka.fetch.max.wait.ms", str(s.fetch_max_wait_ms))
    log(f"source: Spark's Kafka connector, topics {topics}")
    return reader.load().select(
        "topic", "partition", "offset", "key", "value",
        F.expr("unix_millis(timestamp)").alias("timestamp_ms"))


# Spark's checkpoint logs through Hadoop's FileSystem API rather than its FileContext one
_FILE_SYSTEM_LOGS = ("org.apache.spark.sql.execution.streaming.checkpointing."
                     "FileSystemBasedCheckpointFileManager")


def _local_checkpoint_logs(spark, checkpoint: str) -> None:
    """On a local checkpoint, write the offset and commit logs with the FileSystem API: two
    of each micro-batch's steps (walCommit, commitOffsets) took about 50 ms each through
    FileContext and about 15 ms this way, on a cycle of 0.2-0.3 s (BENCHMARKS.md,
    "Freshness"). Both write a temporary file and rename it into place; Spark prefers
    FileContext only because FileSystem's rename is not atomic on every store, and on a
    local disk it is (rename(2) within the log's folder). Checkpoints by URL (hdfs://,
    s3a://, ...) keep Spark's default."""
    from urllib.parse import urlparse

    if urlparse(checkpoint).scheme in ("", "file"):
        spark.conf.set("spark.sql.streaming.checkpointFileManagerClass", _FILE_SYSTEM_LOGS)


def connector_options(k) -> dict[str, str]:
    """The Java Kafka client's settings (`kafka.*` source options) for the same config that
    bus/kafka.py gives librdkafka; the names differ for TLS and SASL. Reveals the password
    into the JAAS option, which spark.redaction.regex hides wherever Spark prints options."""
    bus.client_settings(k)  # the same checks (address set, SASL complete), the same errors
    out = {"kafka.bootstrap.servers": k.bootstrap_servers,
           "kafka.security.protocol": k.security_protocol}
    if k.ssl_ca_location:  # librdkafka's PEM CA file is a PEM truststore to Java
        out["kafka.ssl.truststore.type"] = "PEM"
        out["kafka.ssl.truststore.location"] = k.ssl_ca_location
    if k.sasl_mechanism:
        out["kafka.sasl.mechanism"] = k.sasl_mechanism
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule"
                  if k.sasl_mechanism == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        out["kafka.sasl.jaas.config"] = (f'{module} required username="{k.sasl_username}" '
                                         f'password="{k.sasl_password.reveal()}";')
    return out


def committed_offsets(checkpoint: str) -> dict | None:
    """The source offsets of the last committed batch, from a local checkpoint directory
    (offsets/<id> ends with one JSON line per source; commits/<id> marks it done)."""
    root = Path(checkpoint.removeprefix("file://"))
    try:
        ids = [int(p.name) for p in (root / "commits").iterdir() if p.name.isdigit()]
        lines = (root / "offsets" / str(max(ids))).read_text().splitlines()
        return json.loads(lines[-1])
    except (OSError, ValueError, IndexError):  # remote checkpoint, or nothing committed yet
        return None


def _lag(cfg: Config, progress: dict | None, marks: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Per topic: high watermark minus the offsets the last committed batch ended at."""
    done: dict[str, int] = {}
    end = None
    if progress and progress.get("sources"):
        end = progress["sources"][0].get("endOffset")
    if end is None:  # just restarted: no progress reported yet
        end = committed_offsets(cfg.stream.checkpoint)
    if end is not None:
        end = json.loads(end) if isinstance(end, str) else end
        for topic, parts in end.items():  # Spark's connector: {"topic": {"0": offset}}
            for part, off in parts.items():
                done[f"{topic}:{part}"] = int(off)
    lag: dict[str, int] = {}
    for tp, (lo, hi) in marks.items():
        topic = tp.rsplit(":", 1)[0]
        lag[topic] = lag.get(topic, 0) + max(0, hi - done.get(tp, lo))
    return lag


class StreamJob:
    def __init__(self, cfg: Config, log: Callable[[str], None] = print):
        if not cfg.kafka.bootstrap_servers:
            raise ConfigError("kafka.bootstrap_servers is not set: point it at your Kafka "
                              "(FFS_KAFKA_BOOTSTRAP_SERVERS) or start a local broker with "
                              "`ffs broker`")
        self.cfg, self.log = cfg, log
        self.summary = StreamSummary()
        self._lock = threading.Lock()  # held while a batch runs: stop waits for it
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.last_data = time.monotonic()
        self.query: Any = None  # pyspark's StreamingQuery once started
        self.first_batch_at: float | None = None  # wall clock, for throughput figures
        self.last_batch_end: float | None = None
        self.freshness: list[float] = []  # publish -> written, seconds, every transaction
        self.keep_freshness = False
        self._meta: Any = None  # Kafka client: which partitions hold data (batch thread)
        self._last_events = 0  # messages of the last batch (adaptive: where the next runs)
        self._lag_reader: Any = None  # Kafka client: consumer lag (the thread that runs)

    def start(self) -> StreamJob:
        from ffs.bus import kafka
        from ffs.bus.producer import EventProducer
        from ffs.jobs.batch.spark import spark_session
        from ffs.jobs.stream.batch import BatchProcessor
        from ffs.jobs.stream.metrics import StreamMetrics
        from ffs.online.client import redis_client

        cfg = self.cfg
        self.started = time.monotonic()
        created = kafka.ensure_topics(cfg.kafka)
        if created:
            self.log(f"created topics {created}")
        # the scoring timeout (tens of ms) is for one request; a batch writes thousands
        r = redis_client(dataclasses.replace(cfg.redis, timeout_ms=STREAM_REDIS_TIMEOUT_MS))
        try:
            r.ping()
        except Exception as exc:
            raise TransientError(f"Redis at {cfg.redis.url} did not answer: {exc}") from None
        self.producer = EventProducer(cfg.kafka, validate=False)
        self.processor = BatchProcessor(cfg, r, self.producer.send_raw, self.producer.flush,
                                        self.producer.send_raw)
        self.partitioned: PartitionedBatch | None = None
        if cfg.stream.distributed(cfg.spark.master):
            self._partitioned(cfg)
        self.metrics = StreamMetrics()
        port = self.metrics.serve(cfg.stream.metrics_port, cfg.stream.metrics_host)
        if port:
            self.log(f"metrics: http://{cfg.stream.metrics_host}:{port}/metrics")
        spark = spark_session(cfg.spark, "ffs-stream", self.log)
        spark.conf.set("spark.sql.streaming.pollingDelay", "50ms")
        _local_checkpoint_logs(spark, cfg.stream.checkpoint)
        self.spark = spark
        writer = (_source(spark, cfg, self.log).writeStream.foreachBatch(self._batch)
                  .option("checkpointLocation", cfg.stream.checkpoint)
                  .queryName("ffs_stream"))
        if cfg.stream.trigger_ms > 0:
            writer = writer.trigger(processingTime=f"{cfg.stream.trigger_ms} milliseconds")
        self.query = writer.start()
        if self._adaptive:
            self.log(f"each batch: on the driver, or written and enriched by Spark's tasks "
                     f"(one per Kafka partition) after a batch of "
                     f"{cfg.stream.tasks_after_events:,} events or more")
        else:
            self.log("each batch: " + ("written and enriched by Spark's tasks, one per Kafka "
                                       "partition" if self.partitioned else "on the driver"))
        self.log(f"streaming {cfg.kafka.transactions_topic} + {cfg.kafka.labels_topic} -> "
                 f"Redis {cfg.redis.prefix}:*, {cfg.kafka.enriched_topic}, dead letters to "
                 f"{cfg.kafka.dead_letter_topic}; checkpoint {cfg.stream.checkpoint}")
        return self

    def _partitioned(self, cfg: Config) -> None:
        """The driver's side of executors' tasks: the config they build their clients from (in
        the tasks' closure, never printed; without secrets to a cluster), the repo they must
        have compiled, and which partitions of the transactions topic hold data (for the
        trimming rule)."""
        from ffs.bus import kafka
        from ffs.jobs.stream.partitioned import PartitionedBatch, repo_fingerprint, task_config

        self._meta = kafka.consumer(cfg.kafka)
        topic = cfg.kafka.transactions_topic

        def with_data() -> list[str]:
            marks = kafka.watermarks(cfg.kafka, [topic], cons=self._meta)
            return [tp for tp, (lo, hi) in marks.items() if hi > lo]

        self.partitioned = PartitionedBatch(self.processor, with_data)
        self._task_args = (task_config(cfg), repo_fingerprint())

    def _batch(self, df, batch_id: int) -> None:
        with self._lock:
            if self._stop.is_set():  # a stop was asked between batches: leave it for later
                raise InterruptedError("stream stopping")
            began = time.time()
            tasks = self.partitioned if self.partitioned is not None and \
                self.cfg.stream.as_tasks(self._last_events) else None
            as_tasks = tasks is not None
            try:
                if tasks is not None:
                    from ffs.jobs.stream.partitioned import SparkTasks

                    tasks.keep_freshness = self.keep_freshness
                    # three passes read the batch: from memory, not thrice from Kafka
                    df = df.persist()
                    try:
                        rep = tasks.process(batch_id,
                                                       SparkTasks(df, *self._task_args))
                    finally:
                        df.unpersist()
                else:
                    table = df.toArrow()
                    rows = {c: table.column(c).to_pylist() for c in COLUMNS}
                    rep = self.processor.process(batch_id, rows)
            except BaseException as exc:
                self._error = exc
                raise
            self._last_events = rep.messages
            s = self.summary
            s.batches += 1
            s.events += rep.messages
            s.enriched += rep.enriched
            s.corrections += rep.corrections
            for reason, n in rep.dead_letters.items():
                s.dead_letters[reason] = s.dead_letters.get(reason, 0) + n
            self.metrics.record(rep)
            if rep.messages:
                self.last_data = time.monotonic()
                self.first_batch_at = self.first_batch_at or began
                self.last_batch_end = time.time()
                if self.keep_freshness:
                    self.freshness.extend(rep.freshness_s)
                if self._adaptive:
                    rep.ran = "as tasks" if as_tasks else "on the driver"
                self.log(rep.line())

    @property
    def _adaptive(self) -> bool:
        return self.partitioned is not None and self.cfg.stream.batches_on == "adaptive"

    def lag(self) -> dict[str, int]:
        from ffs.bus import kafka

        k = self.cfg.kafka
        if self._lag_reader is None:  # one client for the job's life, not one every 2 s
            self._lag_reader = kafka.consumer(k)
        try:
            marks = kafka.watermarks(k, [k.transactions_topic, k.labels_topic],
                                     cons=self._lag_reader)
        except Exception:
            self._close_lag_reader()  # a broken client is replaced at the next call
            raise
        lag = _lag(self.cfg, self.query.lastProgress if self.query else None, marks)
        for topic, n in lag.items():
            self.metrics.lag.labels(topic).set(n)
        return lag

    def run(self, until_idle_s: float | None = None, max_seconds: float | None = None,
            stop: threading.Event | None = None) -> StreamSummary:
        """Block until stopped: by a signal, `stop`, max_seconds, or (until_idle_s) once the
        topics are fully processed and nothing new came for that long."""
        stop = stop or self._stop
        deadline = time.monotonic() + max_seconds if max_seconds else None
        reason = ""
        next_lag = 0.0
        while not reason:
            if time.monotonic() >= next_lag:  # the consumer-lag gauge, every 2 s
                next_lag = time.monotonic() + 2.0
                try:
                    self.lag()
                except Exception as exc:  # noqa: BLE001 - a metrics miss must not stop the job
                    self.log(f"warning: could not read consumer lag: {exc}")
            if stop.wait(0.5) or self._stop.is_set():
                reason = "stop requested"
            elif self._error is not None or not self.query.isActive:
                reason = f"failed: {self._error or self.query.exception()}"
            elif deadline and time.monotonic() > deadline:
                reason = f"ran {max_seconds:.0f} s"
            elif until_idle_s is not None and time.monotonic() - self.last_data > until_idle_s:
                if sum(self.lag().values()) == 0:
                    reason = f"caught up and idle for {until_idle_s:.0f} s"
        self.stop()
        self.summary.stopped_because = reason
        self.summary.seconds = time.monotonic() - self.started
        if reason.startswith("failed"):
            raise TransientError(f"stream {reason}")
        return self.summary

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Graceful: waits for the running batch to finish, then stops the query."""
        self._stop.set()
        with self._lock:  # the running batch finishes; a new one sees the flag and refuses
            pass
        try:
            if self.query is not None and self.query.isActive:
                self.query.stop()
        except Exception as exc:  # noqa: BLE001 - the JVM may already be gone (same signal)
            self.log(f"warning: stopping the query: {str(exc).splitlines()[0][:200]}")
        try:
            self.producer.close()
        except Exception as exc:  # noqa: BLE001 - reported, the batch will be redone
            self.log(f"warning: flushing outputs at stop: {exc}")
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        self._close_lag_reader()

    def _close_lag_reader(self) -> None:
        reader, self._lag_reader = self._lag_reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - already closed or broken: nothing to keep
                pass


def run_stream(cfg: Config, log: Callable[[str], None] = print,
               until_idle_s: float | None = None,
               max_seconds: float | None = None) -> StreamSummary:
    job = StreamJob(cfg, log)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, job.request_stop)
    job.start()
    summary = job.run(until_idle_s, max_seconds)
    log(f"stream stopped: {summary.line()}")
    return summary
