"""A Spark session configured for this project (local by default, any master from config)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ffs.config import SparkConfig
from ffs.errors import MissingDependency, TerminalError

_LOG4J = Path(__file__).with_name("log4j2.properties").resolve()
# folders a local session lists on the driver before it starts a Spark job for it
LOCAL_LISTING_THRESHOLD = 100_000


def spark_session(cfg: SparkConfig, app: str = "ffs", log: Callable[[str], None] | None = None):
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
        raise MissingDependency("pyspark", "the Spark jobs") from exc
    if not os.environ.get("JAVA_HOME") and not _which("java"):
        raise TerminalError("Spark needs Java 17: install it (`make setup` does on Debian) "
                            "or set JAVA_HOME")
    started = time.perf_counter()
    # Python workers must run the same interpreter as the driver (the project's venv).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no LAN lookups, quiet start
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app)
        .master(cfg.master)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.driver.maxResultSize", "0")  # training sets are collected to pandas
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "200000")
        .config("spark.sql.adaptive.enabled", "true")
        # pandas writes nanosecond timestamps, which Spark refuses: read them as longs (the
        # batch inputs convert them, jobs/batch/spark_inputs.py), and write microseconds
        # with their UTC flag, never the legacy INT96, so pyarrow reads the store exactly
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Kafka's SASL JAAS option carries a password: redact it wherever Spark prints options
        .config("spark.redaction.regex", "(?i)secret|password|token|access[.]?key|jaas")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_LOG4J}")
    )
    for key, value in master_settings(cfg.master).items():
        builder = builder.config(key, value)
    jars = extra_jars(cfg)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if log:
        log(f"spark session {cfg.master} ready in {time.perf_counter() - started:.1f} s")
    return spark


def master_settings(master: str) -> dict[str, str]:
    """Settings that depend on where the tasks run."""
    if not master.startswith("local"):
        return {}
    # A staged table has a folder per day (183 for the handbook): past 32 folders Spark lists
    # them in a job of one task per folder, six such jobs in a backfill, with more tasks the
    # more days. In local mode those tasks run in this JVM anyway; listing here takes
    # milliseconds.
    # A cluster keeps Spark's default: there the tasks list in parallel, which pays on an
    # object store.
    return {"spark.sql.sources.parallelPartitionDiscovery.threshold":
            str(LOCAL_LISTING_THRESHOLD)}


def extra_jars(cfg: SparkConfig) -> list[str]:
    """spark.jars from config; "auto" finds Spark's Kafka connector resolved by setup (none
    when it was not: the batch jobs need no connector, and the stream then says so)."""
    if cfg.jars != "auto":
        return [j for j in cfg.jars.split(",") if j.strip()]
    from ffs import jvm

    try:
        return jvm.jars("spark-kafka")
    except TerminalError:
        return []


def _which(cmd: str) -> bool:
    from shutil import which

    return which(cmd) is not None


def warm_up(spark) -> None:
    """Run one tiny pandas UDF job so the JVM, the Python workers and their imports are ready
    before the real job: on 2 cores the first job otherwise pays ~9 s of cold start."""
    import pandas as pd

    def touch(pdf: pd.DataFrame) -> pd.DataFrame:
        import ffs.transformations.engine  # noqa: F401  (loaded once per worker)

        return pdf

    df = spark.range(0, 64, numPartitions=2).selectExpr("id", "id % 2 AS g")
    df.groupBy("g").applyInPandas(touch, schema="id bigint, g bigint").count()


def start_in_background(cfg: SparkConfig, log: Callable[[str], None] | None = None):
    """A future of a warmed-up session, so driver-side work overlaps Spark's start."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark-start")

    def start():
        spark = spark_session(cfg, "ffs", log)
        warm_up(spark)
        return spark

    future = pool.submit(start)
    pool.shutdown(wait=False)
    return future
