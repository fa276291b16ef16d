"""The embedded analytics store against a real Apache Kafka: Pinot's
PARTIAL upsert semantics, exact resume from offsets committed with the data, and every
analyst query checked on a small dataset whose answers are computed by hand."""

from __future__ import annotations

import itertools
import time
import uuid

import pandas as pd
import pytest

from ffs.analytics import queries
from ffs.analytics.olap_store import OlapStore
from ffs.bus import kafka
from ffs.bus.messages import Label, Transaction, enriched_label, enriched_transaction
from ffs.bus.producer import EventProducer
from ffs.config import KafkaConfig
from ffs.transformations.features import feature_names

pytestmark = pytest.mark.slow

T0 = 1_710_072_000  # 2024-03-10T12:00:00Z, epoch seconds: "now" of the dataset
H, D = 3600, 86400


@pytest.fixture(scope="module")
def broker(kafka_broker):
    return kafka_broker


@pytest.fixture()
def kcfg(broker) -> KafkaConfig:
    cfg = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, partitions=2,
                      enriched_topic=f"enriched-{uuid.uuid4().hex[:8]}")
    kafka.ensure_topics(cfg, [cfg.enriched_topic])
    return cfg


def publish(cfg: KafkaConfig, messages: list[bytes]) -> None:
    import json

    with EventProducer(cfg, validate=False) as bus:
        for m in messages:
            try:
                key = json.loads(m).get("transaction_id")
            except ValueError:
                key = None
            bus.send_raw(cfg.enriched_topic, None if key is None else str(key).encode(), m)


# processed_at_ms as the stream stamps it: processing time, increasing in publish order
_processed = itertools.count(1_800_000_000_000)


def tx_msg(txid: str, t: int, customer: str = "c1", terminal: str = "m1", amount: float = 10.0,
           processed_ms: int | None = None, **features) -> bytes:
    feats = dict.fromkeys(feature_names(), 0)
    feats.update(customer_nb_tx_30d=1, customer_avg_amount_30d=amount, amount=amount)
    feats.update(features)
    tx = Transaction.of(txid, t, {"customer_id": customer, "terminal_id": terminal,
                                  "amount": amount})
    return enriched_transaction(tx, feats, processed_ms or next(_processed))


def label_msg(txid: str, fraud: int, label_t: int) -> bytes:
    return enriched_label(Label(txid, fraud, label_t), next(_processed))


def row(store: OlapStore, txid: str) -> dict:
    df = store.query(f"SELECT * FROM ffs_enriched WHERE transaction_id = '{txid}'")
    assert len(df) == 1, f"{txid}: {len(df)} rows"
    return df.iloc[0].to_dict()


def test_partial_upsert_label_before_and_after_transaction(kcfg):
    store = OlapStore(kcfg)
    publish(kcfg, [label_msg("early", 1, T0 + 60)])
    assert store.poll_once() == 1
    only_label = row(store, "early")
    assert only_label["is_fraud"] == 1 and pd.isna(only_label["event_time_ms"])
    assert store.now_ms() is None  # a label alone is not a transaction

    publish(kcfg, [tx_msg("early", T0, amount=12.5, customer_nb_tx_1h=3),
                   tx_msg("late", T0 + 5), label_msg("late", 0, T0 + 99)])
    assert store.poll_once() == 3
    early, late = row(store, "early"), row(store, "late")
    assert (early["is_fraud"], early["label_time_ms"]) == (1, (T0 + 60) * 1000)
    assert (early["event_time_ms"], early["amount"], early["customer_nb_tx_1h"]) == \
        (T0 * 1000, 12.5, 3)
    assert early["customer_id"] == "c1" and early["terminal_id"] == "m1"
    assert (late["is_fraud"], late["label_time_ms"], late["event_time_ms"]) == \
        (0, (T0 + 99) * 1000, (T0 + 5) * 1000)
    assert (late["kind"], early["kind"]) == ("transaction", "label")  # first kind kept
    assert store.count() == 2


def test_correction_and_duplicates_in_one_batch_and_across_batches(kcfg):
    store = OlapStore(kcfg)
    publish(kcfg, [tx_msg("t1", T0, customer_nb_tx_1h=1), tx_msg("t1", T0, customer_nb_tx_1h=1),
                   label_msg("t1", 1, T0 + 10), tx_msg("t1", T0, customer_nb_tx_1h=2),
                   tx_msg("t2", T0 + 1), tx_msg("t2", T0 + 1)])
    assert store.poll_once() == 6
    t1 = row(store, "t1")
    assert t1["customer_nb_tx_1h"] == 2 and t1["is_fraud"] == 1  # corrected, label kept
    assert t1["kind"] == "transaction"
    publish(kcfg, [tx_msg("t1", T0, customer_nb_tx_1h=5, customer_secs_since_prev_tx=None)])
    assert store.poll_once() == 1
    t1 = row(store, "t1")
    assert t1["customer_nb_tx_1h"] == 5 and t1["is_fraud"] == 1
    assert store.count() == 2
    assert store.poll_once() == 0


def test_a_row_older_than_the_stored_one_is_dropped_as_pinot_does(kcfg):
    """Pinot's comparison column: a replayed older copy must not bring old values back,
    whether the newer row is stored already or earlier in the same batch."""
    store = OlapStore(kcfg)
    publish(kcfg, [tx_msg("s1", T0, customer_nb_tx_1h=7, processed_ms=2000)])
    assert store.poll_once() == 1
    publish(kcfg, [tx_msg("s1", T0, customer_nb_tx_1h=1, processed_ms=1000),  # older: dropped
                   tx_msg("s2", T0, customer_nb_tx_1h=5, processed_ms=3000),
                   tx_msg("s2", T0, customer_nb_tx_1h=2, processed_ms=2500),  # older in batch
                   tx_msg("s2", T0, customer_nb_tx_1h=6, processed_ms=3000)])  # tie: later wins
    assert store.poll_once() == 4
    assert row(store, "s1")["customer_nb_tx_1h"] == 7
    assert row(store, "s2")["customer_nb_tx_1h"] == 6


def test_restart_resumes_from_committed_offsets(kcfg, tmp_path):
    path = str(tmp_path / "olap.duckdb")
    store = OlapStore(kcfg, path)
    publish(kcfg, [tx_msg(f"r{i}", T0 + i) for i in range(20)])
    assert store.poll_once() == 20
    first = store.offsets()
    store.close()

    publish(kcfg, [tx_msg(f"r{i}", T0 + i) for i in range(20, 30)] + [label_msg("r3", 1, T0 + 50)])
    store = OlapStore(kcfg, path)
    assert store.offsets() == first
    assert store.poll_once() == 11  # only the new messages: nothing read twice
    marks = kafka.watermarks(kcfg, [kcfg.enriched_topic])
    assert store.offsets() == {int(k.rsplit(":", 1)[1]): hi for k, (_, hi) in marks.items()}
    assert store.count() == 30 and row(store, "r3")["is_fraud"] == 1
    assert store.rows_ingested == 11
    store.close()


def test_the_consumer_group_shows_the_stores_offsets(kcfg):
    """For Kafka's lag tools: the group's committed offsets follow the store's own."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    group = f"analytics-{uuid.uuid4().hex[:6]}"
    store = OlapStore(kcfg, group=group)
    publish(kcfg, [tx_msg(f"g{i}", T0 + i) for i in range(25)])
    assert store.poll_once() == 25
    admin = kafka.admin(kcfg)
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(kcfg.enriched_topic, p)
                                              for p in range(kcfg.partitions)])
    deadline, committed = time.monotonic() + 10, {}
    while time.monotonic() < deadline:  # the commit is asynchronous: give it a moment
        got = admin.list_consumer_group_offsets([req])[group].result(10)
        committed = {tp.partition: tp.offset for tp in got.topic_partitions if tp.offset >= 0}
        if committed == store.offsets():
            break
        time.sleep(0.1)
    own = store.offsets()
    store.close()
    assert committed == own == store_offsets_of(kcfg)
    assert sum(committed.values()) == 25


def store_offsets_of(kcfg) -> dict[int, int]:
    marks = kafka.watermarks(kcfg, [kcfg.enriched_topic])
    return {int(k.rsplit(":", 1)[1]): hi for k, (_, hi) in marks.items() if hi > 0}


def test_offsets_and_data_commit_together(kcfg):
    store = OlapStore(kcfg)
    publish(kcfg, [tx_msg("a1", T0), tx_msg("a2", T0)])
    store.query("DROP TABLE ffs_offsets")  # the offsets write now fails inside the transaction
    with pytest.raises(Exception, match="ffs_offsets"):
        store.poll_once()
    assert store.count() == 0  # the upsert was rolled back with it
    store.query("CREATE TABLE ffs_offsets (topic VARCHAR, kafka_partition INTEGER, "
                "next_offset BIGINT, PRIMARY KEY (topic, kafka_partition))")
    assert store.poll_once() == 2 and store.count() == 2


def test_bad_messages_are_skipped_not_blocking(kcfg):
    store = OlapStore(kcfg)
    publish(kcfg, [b'{"transaction_id": "ok1", "kind": "transaction", "event_time_ms": 5}',
                   b'{"transaction_id": "bad", "event_time_ms": "yesterday"}',
                   b'{"no_id": 1}', b'not json'])
    assert store.poll_once() == 4
    assert store.skipped == 3 and store.count() == 1
    assert store.poll_once() == 0


# ------------------------------------------------------------------ the analyst queries


def dataset() -> tuple[list[bytes], dict]:
    """Messages and the answers each query must give, worked out by hand."""
    msgs: list[bytes] = []
    # terminal A: 4 tx in the last hour (2 labelled fraud); its risk feature was 0.9 an
    # hour ago and is 0.2 at its latest transaction. B: 2 tx, 1 fraud, risk 0.5. C: risk 0.
    for i, (dt, fraud) in enumerate([(100, 1), (200, 1), (300, 0), (400, None)]):
        msgs.append(tx_msg(f"A{i}", T0 - dt, terminal="A", customer=f"a{i}",
                           terminal_risk_7d_delay7d=0.2 if i == 0 else 0.9))
        if fraud is not None:
            msgs.append(label_msg(f"A{i}", fraud, T0 - dt + [D // 2, 3 * D // 2, 6 * H][i]))
    for i, fraud in enumerate([1, 0]):
        msgs.append(tx_msg(f"B{i}", T0 - 500 - i, terminal="B", customer=f"b{i}",
                           terminal_risk_7d_delay7d=0.5))
        msgs.append(label_msg(f"B{i}", fraud, T0 + D + H))
    msgs.append(tx_msg("C0", T0 - 2 * H, terminal="C", customer="x", terminal_risk_7d_delay7d=0.0))
    # customer v: 6 tx in an hour vs 30 in 30 days (1 a day): ratio 6. Customer w: 3 in an
    # hour but 90 in 30 days: ratio 1, below min_ratio 2.
    for i in range(6):
        msgs.append(tx_msg(f"V{i}", T0 - 10 * H + i, customer="v", terminal="Z",
                           customer_nb_tx_1h=i + 1, customer_nb_tx_30d=25 + i,
                           customer_sum_amount_1h=10.0 * (i + 1)))
    msgs.append(tx_msg("W0", T0 - 10 * H, customer="w", terminal="Z", customer_nb_tx_1h=3,
                       customer_nb_tx_30d=90))
    # yesterday (24..48 h before now): amounts 1, 2, 3 on terminal Y
    for i, amount in enumerate([1.0, 2.0, 3.0]):
        msgs.append(tx_msg(f"Y{i}", T0 - D - H - i, customer="y", terminal="Y", amount=amount))
    # C and Z both have risk 0; Z (7 tx in 24 h) ranks before C (1 tx)
    expected = {"A_rate": 0.5, "B_rate": 0.5, "risk_order": ["B", "A", "Z", "C"]}
    return msgs, expected


@pytest.fixture()
def loaded(kcfg):
    msgs, expected = dataset()
    publish(kcfg, msgs)
    store = OlapStore(kcfg)
    assert store.poll_once() == len(msgs)
    return store, expected


def test_every_query_on_a_hand_computed_dataset(loaded):
    store, expected = loaded
    assert store.now_ms() == (T0 - 100) * 1000  # newest transaction, not the clock

    by_th = store.run_named("fraud_by_terminal_hour")
    assert list(by_th.columns) == list(queries.QUERIES["fraud_by_terminal_hour"].columns)
    got = {r.terminal_id: (r.n_tx, r.n_fraud, r.fraud_rate) for r in by_th.itertuples()}
    assert got == {"A": (4, 2, expected["A_rate"]), "B": (2, 1, expected["B_rate"])}
    assert list(by_th["terminal_id"]) == ["A", "B"]  # more frauds first
    assert set(by_th["hour_start_ms"]) == {(T0 - H) * 1000}  # 11:00, both in that hour

    hourly = store.run_named("fraud_rate_by_hour")
    # the newest event is at 11:58:20, so 48 h back reaches 11:58:21 two days ago
    assert hourly["n_tx"].sum() == 4 + 2 + 1 + 7 + 3
    last = hourly.iloc[-1]
    assert (last.hour_start_ms, last.n_tx, last.n_fraud) == ((T0 - H) * 1000, 6, 3)
    assert last.fraud_rate == pytest.approx(0.5)

    risky = store.run_named("riskiest_terminals")
    assert list(risky["terminal_id"]) == expected["risk_order"]
    a = risky.set_index("terminal_id").loc["A"]
    assert (a.risk_7d_delay7d, a.n_tx, a.n_fraud_labelled) == (0.2, 4, 2)

    vel = store.run_named("unusual_velocity")
    assert list(vel["customer_id"]) == ["v"]
    v = vel.iloc[0]
    assert v.tx_1h_over_daily_avg == pytest.approx(6 * 30 / 30)  # 6 in an hour, 30 in 30 d
    assert (v.max_nb_tx_1h, v.max_sum_amount_1h, v.n_tx) == (6, 60.0, 4)  # rows with >= 3
    assert v.daily_avg_tx_30d == pytest.approx(30 / 30)

    delay = store.run_named("label_delay")
    got = dict(zip(delay["delay_bucket"].astype(int), delay["n_labels"], strict=True))
    assert got == {0: 2, 1: 3}  # A0 12 h, A2 6 h; A1 36 h, B0/B1 ~25 h
    assert delay.set_index(delay["delay_bucket"].astype(int)).loc[1, "n_fraud"] == 2

    drift = store.run_named("feature_drift").set_index("period")
    assert list(drift.index) == ["yesterday", "today"]
    assert drift.loc["yesterday", "n_tx"] == 3
    assert drift.loc["yesterday", "amount__mean"] == pytest.approx(2.0)
    assert drift.loc["yesterday", "amount__p50"] == pytest.approx(2.0)
    # Pinot's PERCENTILE (and so ours): sorted values[floor(n * 90 / 100)], no interpolation
    assert drift.loc["yesterday", "amount__p90"] == 3.0
    assert drift.loc["today", "n_tx"] == 4 + 2 + 1 + 7
    assert drift.loc["today", "terminal_risk_7d_delay7d__mean"] == pytest.approx(
        (0.2 + 3 * 0.9 + 2 * 0.5) / 14)


def test_parameters_change_answers_and_bad_ones_are_refused(loaded):
    from ffs.errors import InputError

    store, _ = loaded
    assert len(store.run_named("riskiest_terminals", limit=2)) == 2
    assert list(store.run_named("riskiest_terminals", hours=1)["terminal_id"]) == ["B", "A"]
    assert store.run_named("unusual_velocity", min_ratio=7).empty
    with pytest.raises(InputError, match="must be a number"):
        store.run_named("riskiest_terminals", hours="1; DROP TABLE ffs_enriched")
    with pytest.raises(InputError, match="unknown parameter"):
        store.run_named("riskiest_terminals", color=1)


def test_load_frame_matches_streamed_upserts(loaded):
    streamed, _ = loaded
    frame = streamed.query("SELECT * FROM ffs_enriched ORDER BY transaction_id")
    bulk = OlapStore(None)
    assert bulk.load_frame(frame) == len(frame)
    again = bulk.query("SELECT * FROM ffs_enriched ORDER BY transaction_id")
    pd.testing.assert_frame_equal(again, frame)
    for name in queries.QUERIES:
        pd.testing.assert_frame_equal(bulk.run_named(name), streamed.run_named(name))
    # labels only, one key twice in the frame: partial upsert, newest non-null wins
    bulk.load_frame(pd.DataFrame({"transaction_id": ["C0", "C0"], "is_fraud": [0, 1],
                                  "label_time_ms": [T0 * 1000, None]}))
    c0 = row(bulk, "C0")
    assert (c0["is_fraud"], c0["label_time_ms"], c0["terminal_id"]) == (1, T0 * 1000, "C")
