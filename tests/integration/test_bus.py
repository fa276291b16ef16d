"""The bus against a real Apache Kafka: the producer makes every message visible after flush,
keeps each key on one partition in send order, refuses bad events at the caller, and replay
publishes a timeline in event-time order, optionally paced."""

from __future__ import annotations

import functools
import json
import time
import zlib
from collections import defaultdict

import pandas as pd
import pytest

from ffs.bus import kafka
from ffs.bus import messages as M
from ffs.bus.producer import EventProducer
from ffs.bus.replay import replay
from ffs.config import KafkaConfig
from ffs.errors import InputError
from ffs.transformations.ids import ALL_STRING

# the events carry text ids ("c1", "t-1"): every id column is declared string
parse_transaction = functools.partial(M.parse_transaction, id_types=ALL_STRING)
parse_label = functools.partial(M.parse_label, id_types=ALL_STRING)

T0 = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture(scope="module")
def broker(kafka_broker):
    return kafka_broker


@pytest.fixture()
def kcfg(broker, request):
    """Topics of their own for each test (the broker is shared by the module)."""
    name = request.node.name.replace("[", "-").replace("]", "")
    cfg = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, partitions=4,
                      transactions_topic=f"{name}.tx", labels_topic=f"{name}.labels",
                      enriched_topic=f"{name}.enriched", dead_letter_topic=f"{name}.dead")
    kafka.ensure_topics(cfg)
    return cfg


def _count(cfg: KafkaConfig, topic: str) -> int:
    return sum(hi - lo for lo, hi in kafka.watermarks(cfg, [topic]).values())


def test_every_message_is_visible_after_flush(kcfg):
    topic, n, keys = kcfg.transactions_topic, 20_000, 97
    with EventProducer(kcfg, id_types=ALL_STRING) as bus:
        for i in range(n):
            key = f"k{i % keys}"
            bus.send_raw(topic, key, f"{key}:{i}".encode())
        bus.flush()
        assert bus.sent == n
    marks = kafka.watermarks(kcfg, [topic])
    assert len(marks) == 4
    assert sum(hi - lo for lo, hi in marks.values()) == n
    assert all(hi - lo > n // 8 for lo, hi in marks.values())  # keys spread over partitions

    per_key: dict[str, list[int]] = defaultdict(list)
    partition_of: dict[str, set[int]] = defaultdict(set)
    for rec in kafka.read_all(kcfg, topic):
        key, seq = rec.value.decode().split(":")
        assert rec.key.decode() == key
        per_key[key].append(int(seq))
        partition_of[key].add(rec.partition)
    assert sum(map(len, per_key.values())) == n
    for key, seqs in per_key.items():
        assert seqs == list(range(int(key[1:]), n, keys)), key  # all, in send order
        assert partition_of[key] == {zlib.crc32(key.encode()) % 4}


def test_flush_without_new_messages_and_a_second_round(kcfg):
    topic = kcfg.labels_topic
    bus = EventProducer(kcfg, id_types=ALL_STRING)
    bus.flush()  # nothing sent yet: a no-op
    for i in range(10):
        bus.send_raw(topic, b"same-key", b"%d" % i)
    bus.flush()
    assert _count(kcfg, topic) == 10
    bus.send_raw(topic, b"same-key", b"10")
    bus.flush()
    assert [r.value for r in kafka.read_all(kcfg, topic)] == [b"%d" % i for i in range(11)]


GOOD_TX = {"transaction_id": "t1", "customer_id": "c1", "terminal_id": "m9",
           "event_timestamp": "2024-03-01T10:00:00Z", "amount": 12.5}
GOOD_LABEL = {"transaction_id": "t1", "is_fraud": 1, "label_timestamp": "2024-03-08T08:00:00Z"}


@pytest.mark.parametrize("change,reason", [
    ({"amount": "12.5"}, M.BAD_TYPE),
    ({"amount": -1}, M.BAD_AMOUNT),
    ({"customer_id": "c 1"}, M.BAD_ID),
    ({"event_timestamp": "soon"}, M.BAD_TIMESTAMP),
    ({"terminal_id": None}, M.MISSING_FIELD),
])
def test_send_transaction_refuses_bad_input(kcfg, change, reason):
    bus = EventProducer(kcfg, id_types=ALL_STRING)
    with pytest.raises(InputError) as info:
        bus.send_transaction({**GOOD_TX, **change})
    assert f"({reason})" in str(info.value)
    assert bus.sent == 0
    bus.flush()
    assert _count(kcfg, kcfg.transactions_topic) == 0


@pytest.mark.parametrize("change,reason", [
    ({"amount": float("nan")}, M.BAD_AMOUNT),  # was reported as not_json
    ({"amount": float("inf")}, M.BAD_AMOUNT),
    ({"event_timestamp": "2100-01-01T00:00:00Z"}, M.FUTURE),  # was dead-lettered later
])
def test_the_producer_applies_the_streams_rules_with_their_reasons(kcfg, change, reason):
    bus = EventProducer(kcfg, id_types=ALL_STRING)
    with pytest.raises(InputError) as info:
        bus.send_transaction({**GOOD_TX, **change})
    assert f"({reason})" in str(info.value)
    assert bus.sent == 0


def test_a_future_label_is_refused_as_the_stream_would(kcfg):
    bus = EventProducer(kcfg, max_future_s=60, id_types=ALL_STRING)
    soon = M.iso(int(time.time()) + 30)
    bus.send_label({**GOOD_LABEL, "label_timestamp": soon})  # within the allowance
    with pytest.raises(InputError, match=f"\\({M.FUTURE}\\)"):
        bus.send_label({**GOOD_LABEL, "label_timestamp": M.iso(int(time.time()) + 600)})
    bus.flush()
    assert _count(kcfg, kcfg.labels_topic) == 1


def test_an_oversized_message_fails_at_once_and_spoils_nothing_after(kcfg):
    """Before: librdkafka refused it at delivery and a later, unrelated flush raised."""
    bus = EventProducer(kcfg, validate=False)
    with pytest.raises(InputError, match="over the producer's limit"):
        bus.send_raw(kcfg.transactions_topic, b"k", b"x" * 2_000_000)
    bus.send_raw(kcfg.transactions_topic, b"k", b"fine")
    bus.flush()  # no delivery failure from the refused one
    assert _count(kcfg, kcfg.transactions_topic) == 1


@pytest.mark.parametrize("change,reason", [
    ({"is_fraud": 2}, M.BAD_TYPE),
    ({"transaction_id": "a|b"}, M.BAD_ID),
    ({"label_timestamp": None}, M.MISSING_FIELD),
])
def test_send_label_refuses_bad_input(kcfg, change, reason):
    bus = EventProducer(kcfg, id_types=ALL_STRING)
    with pytest.raises(InputError) as info:
        bus.send_label({**GOOD_LABEL, **change})
    assert f"({reason})" in str(info.value)
    assert bus.sent == 0


def test_send_transaction_and_label_keys(kcfg):
    with EventProducer(kcfg, id_types=ALL_STRING) as bus:
        bus.send_transaction(GOOD_TX)
        bus.send_label(GOOD_LABEL)
    [tx] = list(kafka.read_all(kcfg, kcfg.transactions_topic))
    [lab] = list(kafka.read_all(kcfg, kcfg.labels_topic))
    assert tx.key == b"c1" and parse_transaction(tx.value).get("amount") == 12.5
    assert tx.partition == zlib.crc32(b"c1") % 4
    assert lab.key == b"t1" and parse_label(lab.value).is_fraud == 1


# ---- replay ----------------------------------------------------------------------------------

def _frames(n: int = 60):
    """Transactions of 5 customers in shuffled rows, labels 0 s to 3 days after."""
    secs = [(i * 7919) % 5000 for i in range(n)]
    tx = pd.DataFrame({"transaction_id": [f"t{i}" for i in range(n)],
                       "customer_id": [f"c{i % 5}" for i in range(n)],
                       "terminal_id": [f"m{i % 3}" for i in range(n)],
                       "event_timestamp": T0 + pd.to_timedelta(secs, unit="s"),
                       "amount": [round(i * 1.25, 2) for i in range(n)]})
    picked = tx.iloc[::3]
    delay = [(i * 104729) % (3 * 86400) if i % 2 else 0 for i in range(len(picked))]
    labels = pd.DataFrame({"transaction_id": picked["transaction_id"].to_numpy(),
                           "is_fraud": [i % 2 for i in range(len(picked))],
                           "label_timestamp": picked["event_timestamp"].reset_index(drop=True)
                           + pd.to_timedelta(delay, unit="s")})
    return tx, labels


def test_replay_publishes_in_event_time_order(kcfg, monkeypatch):
    tx, labels = _frames()
    calls = []
    original = EventProducer.send_raw

    def spy(self, topic, key, value):
        calls.append((topic, key, value))
        return original(self, topic, key, value)

    monkeypatch.setattr(EventProducer, "send_raw", spy)
    summary = replay(kcfg, tx, labels)
    assert (summary.transactions, summary.labels) == (len(tx), len(labels))

    times, seen_tx = [], {}
    for i, (topic, key, value) in enumerate(calls):
        if topic == kcfg.transactions_topic:
            ev = parse_transaction(value)
            assert key.decode() == ev.get("customer_id")
            seen_tx[ev.transaction_id] = i
            times.append(ev.t)
        else:
            assert topic == kcfg.labels_topic
            lab = parse_label(value)
            assert key.decode() == lab.transaction_id
            assert seen_tx.get(lab.transaction_id, len(calls)) < i  # after its transaction
            times.append(lab.label_t)
    assert times == sorted(times)
    assert len(calls) == len(tx) + len(labels)
    tx_time = labels["transaction_id"].map(tx.set_index("transaction_id")["event_timestamp"])
    assert (labels["label_timestamp"] == tx_time).sum() > 5  # ties with the transaction

    # and the broker holds all of it, with each key's events in event-time order
    got = list(kafka.read_all(kcfg, kcfg.transactions_topic))
    assert sorted(parse_transaction(r.value).transaction_id for r in got) == \
        sorted(tx["transaction_id"])
    per_customer = defaultdict(list)
    for r in got:
        per_customer[r.key].append(parse_transaction(r.value).t)
    assert all(ts == sorted(ts) for ts in per_customer.values())
    want = {(r.transaction_id, int(r.is_fraud), int(r.label_timestamp.timestamp()))
            for r in labels.itertuples(index=False)}
    got_labels = {(lab.transaction_id, lab.is_fraud, lab.label_t) for lab in
                  (parse_label(r.value) for r in kafka.read_all(kcfg, kcfg.labels_topic))}
    assert got_labels == want


def test_replay_paces_event_time_at_speed(kcfg):
    tx = pd.DataFrame({"transaction_id": ["p0", "p1", "p2", "p3"],
                       "customer_id": ["c1", "c2", "c1", "c2"],
                       "terminal_id": ["m1"] * 4,
                       "event_timestamp": T0 + pd.to_timedelta([0, 1, 2, 3], unit="s"),
                       "amount": [1.0, 2.0, 3.0, 4.0]})
    labels = pd.DataFrame({"transaction_id": pd.Series([], dtype=object),
                           "is_fraud": pd.Series([], dtype="int64"),
                           "label_timestamp": pd.Series([], dtype="datetime64[ns, UTC]")})
    started = time.monotonic()
    summary = replay(kcfg, tx, labels, speed=3)
    took = time.monotonic() - started
    assert 0.6 <= took <= 3.0, took  # 3 s of event time at 3x: about 1 s
    assert summary.seconds >= 0.6
    assert _count(kcfg, kcfg.transactions_topic) == 4
    values = [json.loads(r.value) for r in kafka.read_all(kcfg, kcfg.transactions_topic)]
    assert sorted(v["transaction_id"] for v in values) == ["p0", "p1", "p2", "p3"]


def _rdk_threads() -> int:
    """librdkafka's native threads in this process (rdk:main, rdk:broker..., rdk:bg): each
    client has its own, so they count the clients still open."""
    import os

    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended while we looked
            pass
    return sum(1 for n in names if n.startswith("rdk:"))


def test_every_kafka_client_closes_when_its_work_is_done(kcfg):
    """Issue 10, defect 12: consumers outlived their broker (endless reconnect errors after
    the tests passed). Each helper that opens a client closes it, even when its caller stops
    reading early."""
    import gc

    from ffs.analytics.olap_store import OlapStore

    gc.collect()
    before = _rdk_threads()
    kafka.ensure_topics(kcfg)
    with EventProducer(kcfg, id_types=ALL_STRING) as bus:
        for i in range(5):
            bus.send_transaction({"transaction_id": f"t{i}", "customer_id": "c1",
                                  "terminal_id": "m1", "amount": 1.0,
                                  "event_timestamp": "2024-01-01T00:00:00Z"})
    kafka.watermarks(kcfg, [kcfg.transactions_topic])
    assert len(list(kafka.read_all(kcfg, kcfg.transactions_topic))) == 5
    for _rec in kafka.read_all(kcfg, kcfg.transactions_topic):
        break  # a reader that stops early
    store = OlapStore(kcfg)
    store.poll_once()
    store.close()
    gc.collect()
    deadline = time.monotonic() + 10
    while _rdk_threads() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _rdk_threads() <= before
