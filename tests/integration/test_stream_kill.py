"""`ffs stream` for real: Apache Kafka, a private Redis and Spark (reading Kafka with its own
connector) in a child process that is
killed with SIGKILL mid-stream and restarted from its checkpoint, with duplicates and a corpus
of malformed messages on the topics. The online state must equal one clean pass over the same
messages, and the consistency check must find no mismatch, missing or extra row."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from ffs.bus import kafka
from ffs.bus import messages as M
from ffs.bus.broker import LocalKafka
from ffs.bus.producer import EventProducer
from ffs.bus.replay import load_events, replay
from ffs.config import load_config
from ffs.jobs.tools.generate import GenerateSpec, generate_to
from ffs.online.redis_server import RedisServer, free_port
from tests.integration.test_stream_batch import canonical_events

pytestmark = [pytest.mark.spark, pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# (raw value, expected dead-letter reason)
BAD = [
    (b"not json at all", M.NOT_JSON),
    (b'["a", "list"]', M.NOT_OBJECT),
    (b'{"transaction_id": 900001, "customer_id": 1, "terminal_id": 1, "amount": 3}',
     M.MISSING_FIELD),
    (b'{"transaction_id": 900002, "customer_id": 1, "terminal_id": 1, '
     b'"event_timestamp": "2026-01-02T00:00:00Z", "amount": "12.5"}', M.BAD_TYPE),
    (b'{"transaction_id": 900003, "customer_id": 1, "terminal_id": 1, '
     b'"event_timestamp": "2026-01-02T00:00:00Z", "amount": NaN}', M.NOT_JSON),
    (b'{"transaction_id": 900004, "customer_id": 1, "terminal_id": 1, '
     b'"event_timestamp": "2026-01-02T00:00:00Z", "amount": -5}', M.BAD_AMOUNT),
    (b'{"transaction_id": 900005, "customer_id": 1, "terminal_id": 1, '
     b'"event_timestamp": "2100-01-01T00:00:00Z", "amount": 5}', M.FUTURE),
    (b'{"transaction_id": 900006, "customer_id": "c|1", "terminal_id": 1, '
     b'"event_timestamp": "2026-01-02T00:00:00Z", "amount": 5}', M.BAD_ID),
    (b'{"transaction_id": 900007, "customer_id": 1, "terminal_id": 1, '
     b'"event_timestamp": "yesterday", "amount": 5}', M.BAD_TIMESTAMP),
]


def _snapshot(r, prefix: str) -> dict:
    """Every data key of the online state with its content (not the stream's bookkeeping)."""
    out = {}
    for key in r.scan_iter(f"{prefix}:*", count=1000):
        if b":stream:" in key:
            continue
        kind = r.type(key)
        if kind == b"zset":
            out[key] = canonical_events(key, r.zrange(key, 0, -1, withscores=True))
        elif kind == b"string":
            out[key] = r.get(key)
        else:
            out[key] = kind
    return out


def _start(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ffs.cli", "stream", "--until-idle", "4"],
                            cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for_batches(log: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text(errors="replace").count("\nbatch ") >= n:
            return
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {n} batches within {timeout} s:\n"
                         + log.read_text(errors="replace")[-3000:])


@pytest.mark.parametrize("setup", ["executors", "driver", "adaptive"])
def test_sigkill_restart_and_replay_leave_one_clean_runs_state(tmp_path, setup):
    """adaptive: full batches (700, a backlog) are followed by tasks, smaller ones by the
    driver, so one run takes both ways, killed in either."""
    import redis

    from ffs.jobs.stream.batch import BatchProcessor
    from ffs.jobs.tools.consistency import check

    gen = generate_to(tmp_path / "gen", GenerateSpec(customers=150, terminals=300, days=12,
                                                     start="2026-01-01", seed=11))
    tx, labels, _ = load_events(gen.transactions_path, gen.labels_path)
    half = len(tx) // 2
    cut = tx["event_timestamp"].iloc[half]
    with LocalKafka() as broker, RedisServer() as rs:
        cfg = load_config(env={})
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        cfg.redis.url = rs.url
        cfg.stream.allowed_lateness_s = 2 * 86400  # the stream's setting (env below): the
        # consistency check judges lateness by it too
        kafka.ensure_topics(cfg.kafka)
        env = {**os.environ, "FFS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
               "FFS_REDIS_URL": rs.url, "FFS_STREAM_CHECKPOINT": str(tmp_path / "ckpt"),
               "FFS_STREAM_METRICS_PORT": "-1", "FFS_STREAM_MAX_EVENTS_PER_BATCH": "700",
               "FFS_STREAM_ALLOWED_LATENESS_S": str(2 * 86400),
               "FFS_STREAM_BATCHES_ON": setup, "FFS_STREAM_TASKS_AFTER_EVENTS": "600"}
        env.pop("FFS_CONFIG", None)
        # a SIGKILLed JVM leaves its temporary folders (a copy of the Kafka connector's
        # jars among them, ~10 MB a start): in the test's own folder, not in /tmp
        scratch = tmp_path / "jvm-tmp"
        scratch.mkdir()
        env["SPARK_LOCAL_DIRS"] = str(scratch)
        env["JAVA_TOOL_OPTIONS"] = f"-Djava.io.tmpdir={scratch}"
        log = tmp_path / "stream.log"

        # first half, then a kill at a random moment after some batches
        replay(cfg.kafka, tx[tx["event_timestamp"] < cut],
               labels[labels["label_timestamp"] < cut])
        proc = _start(env, log)
        _wait_for_batches(log, 2, proc)
        time.sleep(random.uniform(0, 1.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

        # the rest, the last 300 transactions again (duplicates), and the bad corpus
        replay(cfg.kafka, tx[tx["event_timestamp"] >= cut],
               labels[labels["label_timestamp"] >= cut])
        replay(cfg.kafka, tx.iloc[-300:], labels.iloc[:0])
        with EventProducer(cfg.kafka, validate=False) as bus:
            for value, _reason in BAD:
                bus.send_raw(cfg.kafka.transactions_topic, b"bad", value)
        before = log.read_text().count("\nbatch ")
        proc = _start(env, log)
        _wait_for_batches(log, before + 1, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

        proc = _start(env, log)
        assert proc.wait(300) == 0, log.read_text(errors="replace")[-3000:]
        text = log.read_text(errors="replace")
        assert "stopped: caught up and idle" in text
        assert "source: Spark's Kafka connector" in text
        assert ("one per Kafka partition" in text) == (setup != "driver")
        if setup == "adaptive":
            assert "; as tasks; " in text and "; on the driver; " in text

        # dead letters: every bad message, with its reason (at least once: a killed batch
        # may have published some before dying)
        dead = {}
        for rec in kafka.read_all(cfg.kafka, cfg.kafka.dead_letter_topic):
            d = orjson.loads(rec.value)
            dead[d["value"]] = d["reason"]
        for value, reason in BAD:
            assert dead.get(value.decode()) == reason, (value, dead.get(value.decode()))
        assert len(dead) == len(BAD)

        # one clean pass over the very same messages, into a second Redis
        with RedisServer() as clean:
            rows = {c: [] for c in ("topic", "partition", "offset", "key", "value",
                                    "timestamp_ms")}
            for topic in (cfg.kafka.transactions_topic, cfg.kafka.labels_topic):
                for rec in kafka.read_all(cfg.kafka, topic):
                    for c in rows:
                        rows[c].append(getattr(rec, c))
            c_cfg = load_config(env={})
            c_cfg.redis.url = clean.url
            c_cfg.stream.enrich = False
            conn = redis.Redis.from_url(clean.url)
            BatchProcessor(c_cfg, conn, lambda *a: None, lambda: None).process(0, rows)
            got = _snapshot(redis.Redis.from_url(rs.url), cfg.redis.prefix)
            want = _snapshot(conn, cfg.redis.prefix)
        assert len(want) > 1000
        assert got == want

        report = check(cfg, samples=600, log=lambda _line: None)
        assert report.online.rows == 600 and report.enriched.rows == len(tx)
        assert report.ok, "\n".join(report.lines())

        # operations: metrics while running, and SIGTERM stops it cleanly (exit 0)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "ffs.cli", "stream"], cwd=ROOT,
                                env={**env, "FFS_STREAM_METRICS_PORT": str(port)},
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        metrics = _wait_for_metrics(port, proc, log)
        assert 'ffs_stream_consumer_lag_messages{topic="ffs.transactions"} 0.0' in metrics
        for name in ("ffs_stream_batch_seconds", "ffs_stream_freshness_seconds",
                     "ffs_stream_dead_letters_total", "ffs_stream_watermark_seconds"):
            assert name in metrics
        os.kill(proc.pid, signal.SIGTERM)  # what a supervisor sends to the job's process
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-3000:]
        assert "stopped: stop requested" in log.read_text(errors="replace").split(
            "caught up and idle")[-1]


def _wait_for_metrics(port: int, proc, log: Path, timeout: float = 120) -> str:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            text = text.decode()
            if "ffs_stream_consumer_lag_messages{" in text:
                return text
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("no metrics with consumer lag within the timeout")
