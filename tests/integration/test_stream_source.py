"""The Python Kafka source of `ffs stream`, outside Spark, against the real embedded broker:
offsets, the per-batch budget, reads by offset range, and a checkpoint from another topic."""

from __future__ import annotations

import pytest
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

from bus import kafka
from bus.broker import EmbeddedBroker
from bus.producer import EventProducer
from ffs.config import load_config
from jobs.stream_source import KafkaPartitionsReader


@pytest.fixture(scope="module")
def bus():
    with EmbeddedBroker() as broker:
        cfg = load_config(env={})
        cfg.kafka.bootstrap_servers = broker.bootstrap_servers
        cfg.kafka.partitions = 2
        kafka.ensure_topics(cfg.kafka, ["src.a", "src.b"])
        with EventProducer(cfg.kafka, validate=False) as p:
            for i in range(30):
                p.send_raw("src.a", f"k{i % 7}", b"a%d" % i)
            for i in range(5):
                p.send_raw("src.b", f"k{i}", b"b%d" % i)
        yield cfg


def _reader(cfg, **extra):
    return KafkaPartitionsReader({"topics": "src.b,src.a",
                                  "bootstrap_servers": cfg.kafka.bootstrap_servers, **extra})


def test_offsets_cover_every_message_once_and_read_returns_them(bus):
    r = _reader(bus)
    start = r.initialOffset()
    assert set(start) == {"src.a:0", "src.a:1", "src.b:0", "src.b:1"}
    assert all(v == 0 for v in start.values())
    end = r.latestOffset(start, ReadAllAvailable())
    assert sum(end.values()) == 35
    values = []
    for part in r.partitions(start, end):
        for batch in r.read(part):
            values += batch.column("value").to_pylist()
    want = [b"a%d" % i for i in range(30)] + [b"b%d" % i for i in range(5)]
    assert sorted(values) == sorted(want)
    assert r.latestOffset(end, ReadAllAvailable()) == end  # nothing new: same offsets


def test_the_batch_budget_is_respected_and_every_partition_moves(bus):
    r = _reader(bus, max_events_per_batch="6")
    start = r.initialOffset()
    assert isinstance(r.getDefaultReadLimit(), ReadMaxRows)
    end = r.latestOffset(start, r.getDefaultReadLimit())
    assert sum(end.values()) - sum(start.values()) <= 6 + len(end)
    assert all(end[tp] > start[tp] for tp in end)


def test_latest_starting_offsets_skip_what_is_there(bus):
    r = _reader(bus, starting_offsets="latest")
    start = r.initialOffset()
    assert sum(start.values()) == 35
    assert r.partitions(start, r.latestOffset(start, ReadAllAvailable())) == []


def test_a_checkpoint_beyond_the_topic_end_is_refused(bus):
    r = _reader(bus)
    start = {tp: off + 1000 for tp, off in r.initialOffset().items()}
    with pytest.raises(RuntimeError, match="new stream.checkpoint"):
        r.latestOffset(start, ReadAllAvailable())
