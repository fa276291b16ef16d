"""Apache Pinot for real: the pinned Pinot (0.11.0, analytics/pinot_cluster.py) consuming the
enriched topic of a real Kafka (the session's LocalKafka), with the tables `ffs pinot apply`
creates from `ffs pinot generate`.

One cluster for the module; a few hundred enriched rows with features from the engine go in
three phases: the transactions, then their labels (PARTIAL upsert on transaction_id), then
late corrections (newer processed_at_ms) and revised labels. After each phase every analyst
query (analytics/queries.py) runs on Pinot and on the embedded DuckDB store consuming the same
topic, and the answers must be the same rows. Also: the errors Pinot returns inside HTTP 200,
the SQLAlchemy URL Superset and Grafana use, and `ffs dashboard --store pinot` in Chromium.

Nothing here is skipped for want of a service: without Java or the resolved jars the fixture
fails saying to run `make setup`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffs.analytics import queries
from ffs.analytics.compare import differences
from ffs.analytics.pinot_client import PinotClient, PinotQueryRejected, PinotQueryTimeout
from ffs.bus.messages import Label, Transaction, enriched_label, enriched_transaction
from ffs.config import Config
from tests.browser import assert_page_shows, screenshot, wait_for_charts
from tests.traffic import small_traffic

pytestmark = [pytest.mark.pinot, pytest.mark.slow]

P0 = 1_800_000_000_000  # processed_at_ms of the first message; each later message gets +1
WAIT_S = 90.0


# ---------------------------------------------------------------- the data


@dataclass
class Events:
    """Enriched messages of each phase, and what the rows must hold afterwards."""

    phases: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    features: dict[str, dict] = field(default_factory=dict)  # txid -> as first published
    corrected: dict[str, dict] = field(default_factory=dict)  # txid -> as re-published
    labels: dict[str, tuple[int, int]] = field(default_factory=dict)  # txid -> (fraud, ms)
    revised: dict[str, tuple[int, int]] = field(default_factory=dict)
    label_first: list[str] = field(default_factory=list)  # label published before the tx
    same_stamp: str = ""  # corrected, then its label revised with the same processed_at_ms


def build_events(seed: int = 11) -> Events:
    """240 transactions over 10 days on 12 terminals (so the 7-day-delayed terminal risk is
    defined at the end) plus a velocity burst of customer 99 on the last day; labels for
    half of them, 0-3 days late. processed_at_ms grows with publication order, as the
    stream job stamps it."""
    tx, labels, feats = small_traffic(seed, n=240, customers=10, terminals=12, days=10,
                                      burst=6, burst_gap_s=300)
    ev = Events()
    seq = iter(range(10**6))

    def tx_message(rec, f: dict) -> tuple[str, bytes]:
        t = int(rec.event_timestamp.timestamp())
        msg = Transaction.of(rec.transaction_id, t, rec._asdict())
        return msg.transaction_id, enriched_transaction(msg, f, P0 + next(seq))

    def label_message(txid: str, fraud: int, label_s: int) -> tuple[str, bytes]:
        return txid, enriched_label(Label(txid, fraud, label_s), P0 + next(seq))

    records = list(zip(tx.itertuples(), feats.to_dict("records"), strict=True))
    label_rows = {str(r.transaction_id): (int(r.is_fraud), int(r.label_timestamp.timestamp()))
                  for r in labels.itertuples()}
    labelled = sorted(label_rows, key=int)
    ev.label_first = labelled[-3:]  # their labels go out first, the transactions later
    first, later = [], []
    for rec, f in records:
        txid = str(rec.transaction_id)
        ev.features[txid] = f
        (later if txid in ev.label_first else first).append((rec, f))
    ev.phases["transactions"] = ([tx_message(r, f) for r, f in first]
                                 + [label_message(t, *label_rows[t]) for t in ev.label_first])
    ev.phases["labels"] = ([label_message(t, *label_rows[t]) for t in labelled
                            if t not in ev.label_first]
                           + [tx_message(r, f) for r, f in later])
    ev.labels = {t: (fraud, s * 1000) for t, (fraud, s) in label_rows.items()}
    # late corrections: 20 transactions re-published with different features (some of them
    # the newest of their terminal, so the "right now" queries change); 5 labels revised
    corrections = []
    newest = [(r, f) for r, f in records if str(r.transaction_id) not in ev.label_first][-3:]
    for rec, f in records[::12][:17] + newest:
        g = dict(f)
        risk = f["terminal_risk_7d_delay7d"]
        g["terminal_risk_7d_delay7d"] = min(1.0, (0.0 if pd.isna(risk) else risk) + 0.25)
        g["customer_nb_tx_1h"] = int(f["customer_nb_tx_1h"]) + 1
        g["customer_sum_amount_1h"] = float(f["customer_sum_amount_1h"]) + 5.0
        ev.corrected[str(rec.transaction_id)] = g
        corrections.append(tx_message(rec, g))
    for txid in labelled[:5]:
        fraud, s = label_rows[txid]
        ev.revised[txid] = (1 - fraud, (s + 86400) * 1000)
        corrections.append(label_message(txid, 1 - fraud, s + 86400))
    # one micro-batch can stamp a transaction and its label alike: equal processed_at_ms,
    # the later message wins (Pinot's upsert takes a comparison value >= the stored one)
    ev.same_stamp = next(t for t in ev.corrected if t in label_rows and t not in ev.revised)
    fraud, s = label_rows[ev.same_stamp]
    stamp = next(json.loads(v)["processed_at_ms"] for k, v in corrections
                 if k == ev.same_stamp)
    ev.revised[ev.same_stamp] = (1 - fraud, (s + 2 * 86400) * 1000)
    corrections.append((ev.same_stamp, enriched_label(
        Label(ev.same_stamp, 1 - fraud, s + 2 * 86400), stamp)))
    ev.phases["corrections"] = corrections
    return ev


def final_state(ev: Events, upto: str) -> dict[str, int]:
    """txid -> processed_at_ms of its newest message, after the phases up to `upto`."""
    state: dict[str, int] = {}
    for phase, msgs in ev.phases.items():
        for key, value in msgs:
            state[key] = max(state.get(key, 0), json.loads(value)["processed_at_ms"])
        if phase == upto:
            return state
    raise KeyError(upto)


# ---------------------------------------------------------------- the cluster


@dataclass
class Live:
    cfg: Config
    pinot: object  # analytics.pinot_cluster.LocalPinot
    artifacts: Path
    applied: list[str] = field(default_factory=list)  # what each `ffs pinot apply` printed


def ffs(argv: list[str], cfg: Config) -> int:
    """`ffs ...` through the real command line parser, with this config."""
    from ffs.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.fn(args, cfg)


@pytest.fixture(scope="module")
def live(kafka_broker, tmp_path_factory):
    from ffs.analytics.pinot_cluster import LocalPinot
    from ffs.bus import kafka

    cfg = Config()
    cfg.kafka.bootstrap_servers = kafka_broker.bootstrap_servers
    cfg.kafka.enriched_topic = f"enriched-pinot-{uuid.uuid4().hex[:8]}"
    cfg.kafka.partitions = 4  # as in production: upsert needs each key on one partition
    kafka.ensure_topics(cfg.kafka, [cfg.kafka.enriched_topic])
    out = tmp_path_factory.mktemp("pinot") / "generated"
    with LocalPinot(log=print) as pinot:
        cfg.pinot.controller_url, cfg.pinot.broker_url = pinot.controller_url, pinot.broker_url
        lv = Live(cfg, pinot, out)
        assert ffs(["pinot", "generate", "--out", str(out)], cfg) == 0
        for _ in range(2):  # the second must change nothing
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert ffs(["pinot", "apply", "--artifacts", str(out)], cfg) == 0
            lv.applied.append(printed.getvalue())
        yield lv
        mem = pinot.memory()
        print(f"Pinot after the module: RSS {mem['total'] / 2**20:.0f} MB (ZooKeeper "
              f"{mem['zookeeper'] / 2**20:.0f} MB, controller+broker+server "
              f"{mem['pinot'] / 2**20:.0f} MB); started in {pinot.start_seconds:.1f} s")


def client(lv: Live) -> PinotClient:
    return PinotClient(lv.cfg.pinot)


def publish(cfg: Config, msgs: list[tuple[str, bytes]]) -> None:
    from ffs.bus.producer import EventProducer

    with EventProducer(cfg.kafka, validate=False) as bus:
        for key, value in msgs:
            bus.send_raw(cfg.kafka.enriched_topic, key.encode(), value)


def wait_for(what: str, check, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        ok, last = check()
        if ok:
            return last
        time.sleep(0.2)
    pytest.fail(f"{what} not reached within {timeout_s:.0f} s; last seen {last}")


def pinot_state(c: PinotClient) -> tuple[int, int]:
    df = c.query("SELECT COUNT(*) AS n, SUM(processed_at_ms) AS s FROM ffs_enriched")
    return int(df["n"].iloc[0]), int(df["s"].iloc[0] or 0)


def duck_state(store) -> tuple[int, int]:
    n, s = store.query("SELECT COUNT(*) AS n, SUM(processed_at_ms) AS s "
                       "FROM ffs_enriched").iloc[0]
    return int(n), int(0 if pd.isna(s) else s)


# ---------------------------------------------------------------- the phases


@dataclass
class Snapshot:
    now_ms: int
    pinot_now_ms: float
    duck: dict[str, pd.DataFrame]
    pinot: dict[str, pd.DataFrame]
    pinot_rows: pd.DataFrame  # SELECT * of the watched transactions
    duck_rows: pd.DataFrame
    pinot_null_fraud: set[str]  # watched transactions whose is_fraud IS NULL in Pinot


PHASES = ("transactions", "labels", "corrections")


@pytest.fixture(scope="module")
def events() -> Events:
    return build_events()


def watched(ev: Events) -> list[str]:
    """A corrected and labelled transaction, a corrected unlabelled one, a revised label,
    a label that came before its transaction, a plain labelled one, and one corrected and
    revised with the same processed_at_ms."""
    corrected_labelled = next(t for t in ev.corrected if t in ev.labels and t not in ev.revised)
    corrected_plain = next(t for t in ev.corrected if t not in ev.labels)
    plain = next(t for t in ev.labels if t not in ev.corrected and t not in ev.revised
                 and t not in ev.label_first)
    return [corrected_labelled, corrected_plain, next(iter(ev.revised)), ev.label_first[0],
            plain, ev.same_stamp]


@pytest.fixture(scope="module")
def phases(live, events) -> dict[str, Snapshot]:
    from ffs.analytics.olap_store import OlapStore

    c = client(live)
    store = OlapStore(live.cfg.kafka)  # DuckDB in memory, consuming the same topic
    ids = ", ".join(f"'{t}'" for t in watched(events))
    snaps: dict[str, Snapshot] = {}
    try:
        for phase in PHASES:
            publish(live.cfg, events.phases[phase])
            state = final_state(events, phase)
            want = (len(state), sum(state.values()))
            wait_for(f"Pinot holding every row after {phase!r}",
                     lambda want=want: ((got := pinot_state(c)) == want, got))

            def caught_up(want=want):
                while store.poll_once():
                    pass
                got = duck_state(store)
                return got == want, got
            wait_for(f"DuckDB holding every row after {phase!r}", caught_up)
            now = store.now_ms()
            assert now is not None
            pinot_now = c.query(queries.now_sql("pinot"))["now_ms"].iloc[0]
            snaps[phase] = Snapshot(
                now_ms=now, pinot_now_ms=float(pinot_now),
                duck={q: store.run_named(q, now_ms=now) for q in queries.QUERIES},
                pinot={q: c.query(queries.render(q, "pinot", now_ms=now))
                       for q in queries.QUERIES},
                pinot_rows=c.query(f"SELECT * FROM ffs_enriched WHERE transaction_id IN "
                                   f"({ids})"),
                duck_rows=store.query(f"SELECT * FROM ffs_enriched WHERE transaction_id IN "
                                      f"({ids})"),
                pinot_null_fraud=set(c.query(
                    f"SELECT transaction_id FROM ffs_enriched WHERE is_fraud IS NULL AND "
                    f"transaction_id IN ({ids})")["transaction_id"]))
    finally:
        store.close()
    return snaps


# ---------------------------------------------------------------- apply


def test_apply_creates_the_tables_then_changes_nothing(live):
    first, second = live.applied
    for kind, name in (("schema", "ffs_enriched"), ("schema", "ffs_enriched_agg"),
                       ("table", "ffs_enriched"), ("table", "ffs_enriched_agg")):
        assert f"  {kind} {name}: created\n" in first, first
        assert f"  {kind} {name}: unchanged\n" in second, second
    assert "applied: changes made" in first and "applied: nothing to change" in second
    # what Pinot holds is what was generated: no setting it did not know was dropped
    from ffs.analytics.pinot_client import request_json

    _, have = request_json("GET", f"{live.cfg.pinot.controller_url}/tables/ffs_enriched")
    table = have["REALTIME"]
    assert table["upsertConfig"]["mode"] == "PARTIAL"
    assert table["upsertConfig"]["comparisonColumn"] == "processed_at_ms"
    stream = table["ingestionConfig"]["streamIngestionConfig"]["streamConfigMaps"][0]
    assert stream["stream.kafka.broker.list"] == live.cfg.kafka.bootstrap_servers
    assert stream["stream.kafka.topic.name"] == live.cfg.kafka.enriched_topic
    assert table["routing"]["instanceSelectorType"] == "strictReplicaGroup"


def test_a_changed_table_config_is_updated_and_back(live, tmp_path):
    from ffs.analytics.pinot_apply import apply
    from ffs.analytics.pinot_client import request_json

    changed = tmp_path / "changed"
    shutil.copytree(live.artifacts, changed)
    path = changed / "ffs_enriched_agg.table.json"
    table = json.loads(path.read_text())
    table["segmentsConfig"]["retentionTimeValue"] = "90"
    path.write_text(json.dumps(table))
    result = apply(live.cfg, changed)
    assert ("table", "ffs_enriched_agg", "updated") in result.actions
    url = f"{live.cfg.pinot.controller_url}/tables/ffs_enriched_agg"
    assert request_json("GET", url)[1]["REALTIME"]["segmentsConfig"][
        "retentionTimeValue"] == "90"
    assert ("table", "ffs_enriched_agg", "updated") in apply(live.cfg, live.artifacts).actions
    assert not apply(live.cfg, live.artifacts).changed()


# ---------------------------------------------------------------- upserts


def row(df: pd.DataFrame, txid: str) -> dict:
    got = df[df["transaction_id"] == txid]
    assert len(got) == 1, f"{txid}: {len(got)} rows"
    return got.iloc[0].to_dict()


def close(a, b) -> bool:
    return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=1e-12))


def test_enriched_rows_become_queryable_with_their_features(phases, events):
    snap = phases["transactions"]
    corrected_labelled, corrected_plain, _, label_first, plain, _ = watched(events)
    for txid in (corrected_labelled, corrected_plain, plain):
        got, f = row(snap.pinot_rows, txid), events.features[txid]
        for name in ("amount", "customer_nb_tx_1h", "customer_sum_amount_1h",
                     "terminal_risk_7d_delay7d", "customer_nb_tx_30d"):
            assert close(got[name], f[name]), (txid, name, got[name], f[name])
        assert got["kind"] == "transaction"
    # no label yet: is_fraud is null (Pinot's selections show the column default, 0)
    assert {corrected_labelled, plain} <= snap.pinot_null_fraud
    assert row(snap.pinot_rows, plain)["is_fraud"] == 0
    # a label that came first is a row of its own until its transaction arrives
    early = row(snap.pinot_rows, label_first)
    assert early["kind"] == "label" and early["is_fraud"] == events.labels[label_first][0]
    assert early["event_time_ms"] <= 0  # Pinot's default for a null time: Long.MIN_VALUE


def test_a_label_upserts_is_fraud_without_wiping_the_features(phases, events):
    before, after = phases["transactions"], phases["labels"]
    corrected_labelled, _, _, label_first, plain, _ = watched(events)
    for txid in (corrected_labelled, plain):
        got = row(after.pinot_rows, txid)
        assert (got["is_fraud"], got["label_time_ms"]) == events.labels[txid]
        old = row(before.pinot_rows, txid)
        for name in ("amount", "customer_nb_tx_1h", "terminal_risk_7d_delay7d",
                     "event_time_ms", "customer_id", "terminal_id", "kind"):
            assert got[name] == old[name], (txid, name)
        assert txid not in after.pinot_null_fraud
    # the transaction behind an early label completes it; the label stays, kind stays first
    early = row(after.pinot_rows, label_first)
    assert early["event_time_ms"] > 0 and early["kind"] == "label"
    assert close(early["customer_nb_tx_30d"], events.features[label_first]["customer_nb_tx_30d"])
    assert (early["is_fraud"], early["label_time_ms"]) == events.labels[label_first]


def test_a_late_correction_replaces_the_features_and_keeps_the_label(phases, events):
    after = phases["corrections"]
    corrected_labelled, corrected_plain, revised, _, plain, same = watched(events)
    for txid in (corrected_labelled, corrected_plain):
        got, g = row(after.pinot_rows, txid), events.corrected[txid]
        for name in ("customer_nb_tx_1h", "customer_sum_amount_1h", "terminal_risk_7d_delay7d"):
            assert close(got[name], g[name]), (txid, name, got[name], g[name])
        assert not close(got["customer_nb_tx_1h"], events.features[txid]["customer_nb_tx_1h"])
    got = row(after.pinot_rows, corrected_labelled)
    assert (got["is_fraud"], got["label_time_ms"]) == events.labels[corrected_labelled]
    assert corrected_plain in after.pinot_null_fraud  # a correction brings no label
    # a revised label replaces the first one
    assert (row(after.pinot_rows, revised)["is_fraud"],
            row(after.pinot_rows, revised)["label_time_ms"]) == events.revised[revised]
    assert row(after.pinot_rows, plain) == row(phases["labels"].pinot_rows, plain)
    # correction and revised label stamped alike: both applied, in arrival order
    got, g = row(after.pinot_rows, same), events.corrected[same]
    assert close(got["customer_nb_tx_1h"], g["customer_nb_tx_1h"])
    assert (got["is_fraud"], got["label_time_ms"]) == events.revised[same]


# ---------------------------------------------------------------- Pinot == DuckDB


@pytest.mark.parametrize("phase", PHASES)
def test_the_watched_rows_are_the_same_in_both_stores(phases, events, phase):
    """Column by column: DuckDB's value where it has one; where DuckDB holds null, Pinot's
    null vector says null too (its selections show the column default)."""
    snap = phases[phase]
    for txid in watched(events):
        duck, pinot = row(snap.duck_rows, txid), row(snap.pinot_rows, txid)
        for col, value in duck.items():
            if pd.isna(value):
                if col == "is_fraud":
                    assert txid in snap.pinot_null_fraud, (phase, txid)
                continue
            if isinstance(value, str):
                assert pinot[col] == value, (phase, txid, col)
            else:
                assert close(pinot[col], value), (phase, txid, col, pinot[col], value)


def assert_same_rows(duck: pd.DataFrame, pinot: pd.DataFrame, what: str) -> None:
    diff = differences(duck, pinot)
    assert not diff, f"{what}: " + "; ".join(diff)


@pytest.mark.parametrize("name", list(queries.QUERIES))
@pytest.mark.parametrize("phase", PHASES)
def test_pinot_and_duckdb_give_the_same_rows(phases, phase, name):
    snap = phases[phase]
    assert snap.pinot_now_ms == snap.now_ms  # both anchor to the same newest event
    duck, pinot = snap.duck[name], snap.pinot[name]
    assert list(duck.columns) == list(queries.QUERIES[name].columns)
    if phase != "transactions":  # before the labels, the fraud and label queries are empty
        assert len(duck) > 0, f"{name} has no rows after {phase}: the data does not test it"
    assert_same_rows(duck, pinot, f"{name} after {phase}")


def test_the_phases_change_the_answers(phases):
    """The comparisons above see labels and corrections, not three copies of one state."""
    by = {p: phases[p].duck for p in PHASES}
    assert by["transactions"]["label_delay"]["n_labels"].sum() < \
        by["labels"]["label_delay"]["n_labels"].sum()
    for name in ("riskiest_terminals", "unusual_velocity", "label_delay"):
        assert not by["labels"][name].equals(by["corrections"][name]), name


# ---------------------------------------------------------------- errors


def test_errors_inside_http_200_from_the_live_broker(live, phases):
    c = client(live)
    cases = [("SELEC terminal_id FROM ffs_enriched", 150, "SqlCompilationException"),
             ("SELECT COUNT(*) FROM ffs_no_such_table", 190, "TableDoesNotExistError"),
             ("SELECT no_such_feature FROM ffs_enriched", 710, "no_such_feature")]
    for sql, code, words in cases:
        with pytest.raises(PinotQueryRejected) as info:
            c.query(sql)
        assert info.value.code == code and words in info.value.message, info.value
        assert f"Pinot error {code}" in str(info.value)
    heavy = ("SELECT terminal_id, customer_id, PERCENTILE(amount, 90), "
             "DISTINCTCOUNT(transaction_id) FROM ffs_enriched GROUP BY terminal_id, "
             "customer_id LIMIT 1000")
    with pytest.raises(PinotQueryTimeout) as info:  # a TransientError: worth a retry
        c.query(heavy, options={"timeoutMs": 1})
    # 0.11: 400 when the broker runs out of time, 427 when the server did not answer in
    # time, 250 when the server noticed first
    assert info.value.code in (250, 400, 427), info.value


def test_named_query_through_the_cli(live, phases, capsys):
    assert ffs(["pinot", "query", "--named", "riskiest_terminals", "--format", "csv"],
               live.cfg) == 0
    out = capsys.readouterr()
    from io import StringIO

    got = pd.read_csv(StringIO(out.out), dtype={"terminal_id": str})
    assert_same_rows(phases["corrections"].pinot["riskiest_terminals"], got, "cli")


# ---------------------------------------------------------------- BI tools


def test_the_sqlalchemy_url_superset_and_grafana_use(live, phases):
    import sqlalchemy as sa

    url = live.pinot.sqlalchemy_url
    assert url == (f"pinot://127.0.0.1:{live.pinot.broker_port}/query/sql?controller="
                   f"http://127.0.0.1:{live.pinot.controller_port}/")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            sql = queries.render("fraud_rate_by_hour", "pinot",
                                 now_ms=phases["corrections"].now_ms)
            rows = conn.execute(sa.text(sql)).fetchall()
            inspector = sa.inspect(conn)
            tables = inspector.get_table_names()
            columns = {c["name"] for c in inspector.get_columns("ffs_enriched")}
    finally:
        engine.dispose()
    got = pd.DataFrame(rows, columns=list(queries.QUERIES["fraud_rate_by_hour"].columns))
    assert_same_rows(phases["corrections"].pinot["fraud_rate_by_hour"], got, "pinotdb")
    assert {"ffs_enriched", "ffs_enriched_agg"} <= set(tables)
    assert {"transaction_id", "is_fraud", "terminal_risk_7d_delay7d"} <= columns


# ---------------------------------------------------------------- the dashboard


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_dashboard_on_pinot_draws_the_brokers_numbers(live, phases, chrome):
    from ffs.analytics.dashboard import start_dashboard

    cfg = copy.deepcopy(live.cfg)
    cfg.analytics.store = "pinot"  # what `ffs dashboard --store pinot` sets
    cfg.analytics.refresh_s = 1
    url, stop = start_dashboard(cfg, "127.0.0.1", 0)
    try:
        assert get_json(url + "health")["store"] == "pinot"
        meta = get_json(url + "api/queries")
        assert meta["store"] == "pinot"
        chrome.get(url)
        rows = wait_for_charts(chrome)
        assert "store: pinot" in chrome.execute_script(
            "return document.getElementById('store').textContent")
        c = client(live)
        now = phases["corrections"].now_ms
        assert_page_shows(chrome, rows, lambda name: c.query(
            queries.render(name, "pinot", now_ms=now)))
        screenshot(chrome, "dashboard_pinot.png")
    finally:
        stop()


# ---------------------------------------------------------------- after the comparisons


def test_a_row_older_than_the_stored_one_is_dropped(live, phases, events):
    """Pinot's upsert keeps the newest processed_at_ms: a stale copy of a row (a replay of an
    older topic) changes nothing (the DuckDB store follows the same rule: test_olap_store)."""
    import zlib

    c = client(live)
    txid = watched(events)[4]  # plain
    before = row(c.query(f"SELECT * FROM ffs_enriched WHERE transaction_id = '{txid}'"), txid)
    stale = dict(events.features[txid], customer_nb_tx_1h=999)
    tx = Transaction.of(txid, int(before["event_time_ms"]) // 1000, before)
    # a new key on the same partition: once it is in, so is everything before it there
    partition = zlib.crc32(txid.encode()) % live.cfg.kafka.partitions
    marker = next(m for m in (f"marker-{i}" for i in range(1000))
                  if zlib.crc32(m.encode()) % live.cfg.kafka.partitions == partition)
    publish(live.cfg, [(txid, enriched_transaction(tx, stale, P0 - 1)),
                       (marker, enriched_transaction(
                           Transaction.of(marker, tx.t, {"customer_id": "c-marker",
                                                         "terminal_id": "t-marker",
                                                         "amount": 1.0}),
                           events.features[txid], P0 + 10**6))])
    wait_for("the marker row", lambda: (len(got := c.query(
        f"SELECT transaction_id FROM ffs_enriched WHERE transaction_id = '{marker}'")) == 1,
        got))
    after = row(c.query(f"SELECT * FROM ffs_enriched WHERE transaction_id = '{txid}'"), txid)
    assert after == before


# ---------------------------------------------------------------- last: a schema change


def test_a_new_feature_column_reaches_the_live_schema(live, phases, events, tmp_path):
    """What `ffs pinot generate` + `ffs pinot apply` do when a feature is added: the schema
    is updated in place and the column is queryable on the rows already there. Last in the
    module: the column stays (Pinot refuses to drop one)."""
    from ffs.analytics.pinot_apply import apply

    changed = tmp_path / "changed"
    shutil.copytree(live.artifacts, changed)
    path = changed / "ffs_enriched.schema.json"
    schema = json.loads(path.read_text())
    schema["metricFieldSpecs"].append({"name": "terminal_new_feature", "dataType": "DOUBLE"})
    path.write_text(json.dumps(schema))
    c = client(live)
    n_rows = pinot_state(c)[0]
    result = apply(live.cfg, changed)
    assert ("schema", "ffs_enriched", "updated") in result.actions
    # right after the reload a query naming the new column may see no segment yet
    sql = "SELECT COUNT(*) AS n, MAX(terminal_new_feature) AS m FROM ffs_enriched"
    df = wait_for("the new column queryable on every row", lambda: (
        (got := _try(c, sql))[0] and int(got[1]["n"].iloc[0]) == n_rows, got[1]))
    assert n_rows >= len(final_state(events, "corrections"))
    assert float(df["m"].iloc[0]) == 0.0  # no value yet: Pinot's default for a DOUBLE metric
    assert not apply(live.cfg, changed).changed()


def _try(c: PinotClient, sql: str):
    try:
        return True, c.query(sql)
    except PinotQueryRejected as exc:
        return False, exc
