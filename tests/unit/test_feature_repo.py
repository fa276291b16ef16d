"""The shipped feature repo is Feast objects (feature_repo/fraud.py), compiled for the engines
(transformations/compiler.py), cached (transformations/repo.py); a broken repo gets every
problem at once, each naming its object and its fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffs.config import Config
from ffs.transformations import repo
from ffs.transformations.compiler import RepoError
from ffs.transformations.declarations import Agg, Entity
from ffs.transformations.features import (
    FEATURE_SERVICE,
    RECENCY_FEATURES,
    REQUEST_FEATURES,
    WINDOW_FEATURES,
    feature_names,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
D, H, M = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
C, T = Entity("customer", ("customer_id",)), Entity("terminal", ("terminal_id",))

# the 23 features as the product served them before the repo was written in Feast's API:
# (name, entity, aggregation, window, column, delay), in the service's order
EXPECTED_WINDOWS = [
    ("customer_nb_tx_1d", C, Agg.COUNT, D, None, 0 * D),
    ("customer_avg_amount_1d", C, Agg.MEAN, D, "amount", 0 * D),
    ("customer_nb_tx_7d", C, Agg.COUNT, 7 * D, None, 0 * D),
    ("customer_avg_amount_7d", C, Agg.MEAN, 7 * D, "amount", 0 * D),
    ("customer_nb_tx_30d", C, Agg.COUNT, 30 * D, None, 0 * D),
    ("customer_avg_amount_30d", C, Agg.MEAN, 30 * D, "amount", 0 * D),
    ("terminal_nb_tx_1d_delay7d", T, Agg.COUNT, D, None, 7 * D),
    ("terminal_risk_1d_delay7d", T, Agg.FRAUD_RATE, D, "is_fraud", 7 * D),
    ("terminal_nb_tx_7d_delay7d", T, Agg.COUNT, 7 * D, None, 7 * D),
    ("terminal_risk_7d_delay7d", T, Agg.FRAUD_RATE, 7 * D, "is_fraud", 7 * D),
    ("terminal_nb_tx_30d_delay7d", T, Agg.COUNT, 30 * D, None, 7 * D),
    ("terminal_risk_30d_delay7d", T, Agg.FRAUD_RATE, 30 * D, "is_fraud", 7 * D),
    ("customer_nb_tx_10m", C, Agg.COUNT, 10 * M, None, 0 * D),
    ("customer_sum_amount_10m", C, Agg.SUM, 10 * M, "amount", 0 * D),
    ("customer_nb_tx_1h", C, Agg.COUNT, H, None, 0 * D),
    ("customer_sum_amount_1h", C, Agg.SUM, H, "amount", 0 * D),
    ("customer_nb_terminals_1d", C, Agg.COUNT_DISTINCT, D, "terminal_id", 0 * D),
    ("terminal_nb_tx_1h", T, Agg.COUNT, H, None, 0 * D),
]


V1_REQUEST = [("amount", "float64"), ("tx_during_weekend", "int64"),
              ("tx_during_night", "int64"), ("amount_over_customer_avg_30d", "float64")]
# the behavioural features fraud_detection_v2 adds (name, entity, aggregation, window, column)
CT = Entity("customer+terminal", ("customer_id", "terminal_id"))
EXPECTED_BEHAVIOUR = [
    ("customer_terminal_nb_tx_30d", CT, Agg.COUNT, 30 * D, None),
    ("customer_terminal_first_seen_30d", CT, Agg.FIRST_SEEN, 30 * D, "event_timestamp"),
    ("customer_std_amount_30d", C, Agg.STD, 30 * D, "amount"),
    ("customer_max_amount_1d", C, Agg.MAX, D, "amount"),
    ("customer_night_share_30d", C, Agg.MEAN, 30 * D, "is_night"),
    ("customer_first_seen_30d", C, Agg.FIRST_SEEN, 30 * D, "event_timestamp"),
    ("customer_prev_terminal_x", C, Agg.LAST, 30 * D, "terminal_x"),
    ("customer_prev_terminal_y", C, Agg.LAST, 30 * D, "terminal_y"),
]


def test_the_shipped_repo_compiles_to_the_23_features_unchanged():
    windows = {w.name: w for w in WINDOW_FEATURES}
    v1 = repo.load().service_features("fraud_detection_v1")
    assert [n for n in v1 if n in windows] == [e[0] for e in EXPECTED_WINDOWS]
    got = [(w.name, w.entity, w.agg, w.window, w.column, w.delay)
           for w in (windows[e[0]] for e in EXPECTED_WINDOWS)]
    assert got == EXPECTED_WINDOWS
    assert [(r.name, r.entity, r.horizon) for r in RECENCY_FEATURES] == [
        ("customer_secs_since_prev_tx", C, 30 * D)]
    request = dict((r.name, r.dtype) for r in REQUEST_FEATURES)
    assert [(n, request[n]) for n in v1 if n in request] == V1_REQUEST
    assert len(v1) == 23 and v1[:4] == [n for n, _ in V1_REQUEST]


def test_the_served_service_is_v1_plus_the_behavioural_features():
    compiled = repo.load()
    assert FEATURE_SERVICE == "fraud_detection_v2" == compiled.service
    assert compiled.service_features(FEATURE_SERVICE) == feature_names()
    v1 = compiled.service_features("fraud_detection_v1")
    added = [n for n in feature_names() if n not in v1]
    windows = {w.name: w for w in WINDOW_FEATURES}
    assert [(w.name, w.entity, w.agg, w.window, w.column)
            for w in (windows[n] for n in added if n in windows)] == EXPECTED_BEHAVIOUR
    assert [n for n in added if n not in windows] == [
        "amount_zscore_30d", "first_time_at_terminal", "distance_from_prev_terminal",
        "speed_from_prev_terminal"]
    assert compiled.optional == ["terminal_x", "terminal_y"]
    assert compiled.derived_columns == ("is_night",)
    assert "is_night" not in compiled.input_values and "terminal_x" in compiled.input_values


def test_feast_collects_the_repo_as_feast_apply_does():
    contents = repo.parse(repo.SHIPPED)
    assert sorted(e.name for e in contents.entities if e.name != "__dummy") == [
        "customer", "terminal"]
    assert sorted(v.name for v in contents.stream_feature_views) == [
        "customer_daily", "customer_habits", "customer_terminal", "customer_velocity",
        "terminal_risk", "terminal_velocity"]
    assert sorted(v.name for v in contents.on_demand_feature_views) == [
        "behaviour_features", "transaction_features"]
    assert sorted(s.name for s in contents.feature_services) == [
        "fraud_detection_v1", "fraud_detection_v2"]
    assert {"transactions", "labels", "transaction", "location"} <= {
        s.name for s in contents.data_sources}


def test_the_request_function_runs_from_its_source_as_feast_runs_it():
    """The engines run the on-demand view's function from the source the compiler kept (no
    Feast, no repo globals); it gives what Feast's own call gives, and the handbook's rules:
    weekend and night (hour <= 6) in UTC, the amount over the 30-day mean."""
    from feature_repo.fraud import transaction_features
    from ffs.transformations import timestamps as TS
    from ffs.transformations.features import REQUEST_FUNCTIONS

    fn = next(f for f in REQUEST_FUNCTIONS if f.view == "transaction_features")
    assert fn.request_inputs == ("amount", "event_timestamp")
    assert fn.feature_inputs == ("customer_avg_amount_30d",)
    t = np.array([1_709_251_200 + i * 5_400 for i in range(40)])  # every 90 min from 1 March
    amounts = [float(i) for i in range(40)]
    means = [None, 0.0, float("nan")] + [2.0] * 37
    ours = fn.apply(t.tolist(), {"amount": amounts}, {"customer_avg_amount_30d": means})
    feasts = transaction_features.feature_transformation.udf(
        {"amount": amounts, "customer_avg_amount_30d": [None, 0.0, None] + [2.0] * 37,
         "event_timestamp": [pd.Timestamp(s, unit="s", tz="UTC") for s in t]})
    assert ours == feasts
    assert ours["tx_during_weekend"] == (TS.weekday(t) >= 5).astype(int).tolist()
    assert ours["tx_during_night"] == (TS.hour(t) <= 6).astype(int).tolist()
    assert sum(ours["tx_during_weekend"]) > 0 and sum(ours["tx_during_night"]) > 0
    assert ours["amount_over_customer_avg_30d"][:3] == [None, None, None]
    assert ours["amount_over_customer_avg_30d"][3:] == [a / 2.0 for a in amounts[3:]]


BROKEN = '''
from datetime import timedelta
from feast import (Aggregation, Entity, FeatureService, Field, KafkaSource, StreamFeatureView,
                   ValueType)
from feast.data_format import JsonFormat
from feast.types import Float64, Int64
from feast import FileSource

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)
payments = KafkaSource(name="payments", kafka_bootstrap_servers="k:9092", topic="p",
    timestamp_field="event_timestamp",
    message_format=JsonFormat(schema_json="transaction_id bigint, customer_id bigint, "
                                          "event_timestamp timestamp, amount double"),
    batch_source=FileSource(name="payments_offline", path="p.parquet",
                            timestamp_field="event_timestamp"))
v = StreamFeatureView(name="v", entities=[customer], source=payments, ttl=timedelta(days=1),
    timestamp_field="event_timestamp", tags={"ffs.delay": "a week"},
    aggregations=[
        Aggregation(column="amount", function="median", time_window=timedelta(hours=1),
                    name="a"),
        Aggregation(column="tip", function="sum", time_window=timedelta(hours=1), name="b"),
        Aggregation(column="amount", function="sum", time_window=timedelta(days=3), name="c"),
        Aggregation(column="amount", function="sum", time_window=timedelta(hours=1),
                    name="c"),
        Aggregation(column="amount", function="fraud_rate", time_window=timedelta(hours=1),
                    name="d"),
    ],
    schema=[Field(name="a", dtype=Float64), Field(name="b", dtype=Float64),
            Field(name="c", dtype=Int64), Field(name="d", dtype=Float64)])
svc = FeatureService(name="s", features=[v])
'''


@pytest.fixture()
def broken_repo(tmp_path):
    (tmp_path / "feature_store.yaml").write_text(textwrap.dedent("""\
        project: broken
        provider: local
        registry: registry.db
        online_store:
          type: sqlite
        entity_key_serialization_version: 3
        """))
    (tmp_path / "repo.py").write_text(BROKEN)
    return tmp_path


def test_a_broken_repo_gets_every_problem_at_once_with_its_object_and_fix(broken_repo):
    """(tests/unit/test_compiler.py has the generic repo's problems; these are the ones a
    team editing a repo of the shipped shape meets.)"""
    cfg = Config()
    cfg.ids.keys["customer_id"] = "int"  # declared in the config, STRING in the repo
    cfg.features.repo = str(broken_repo)
    with pytest.raises(RepoError) as info:
        repo.compile_repo(repo.repo_dir(cfg), cfg)
    lines = [p.line() for p in info.value.problems]
    expect = [
        "Entity customer: ids are string here but the config declares ids.customer_id: int",
        "StreamFeatureView v: tag ffs.delay: 'a week' is not a span",
        "aggregation a: unknown function 'median'",
        "aggregation b: column 'tip' is not in the source's schema",
        "aggregation c: feature name 'c' is also declared by",
        "aggregation c: the view's schema gives it type int64; the engines compute float64",
        "aggregation c: the view's ttl 1 day, 0:00:00 is shorter than its window plus delay",
        "aggregation d: fraud_rate counts labels, and the view names no label source",
    ]
    for text in expect:
        assert any(text in line for line in lines), (text, lines)
    assert all("; fix: " in line for line in lines)
    assert len(lines) == len(expect) + 1  # both aggregations named c have the wrong type


def test_the_cache_follows_the_repo_and_loads_without_feast(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo.SHIPPED, copy, ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    cfg = Config()
    cfg.features.repo = str(copy)
    first = repo.load(cfg)
    assert (copy / repo.CACHE).exists()
    assert [w.name for w in first.windows] == [w[0] for w in EXPECTED_WINDOWS] + [
        w[0] for w in EXPECTED_BEHAVIOUR]
    # a process without Feast loads the cached declarations
    code = ("import sys; sys.modules['feast'] = None\n"
            "import transformations.features as f\n"
            "assert len(f.feature_names()) == 35, f.feature_names()\n")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), FFS_FEATURES_REPO=str(copy))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=PROJECT_ROOT)
    # an edit to the repo compiles again: one window fewer
    text = (copy / "fraud.py").read_text()
    window = ('    _window("customer_sum_amount_1h", "sum", timedelta(hours=1), "amount",\n'
              '            "amount spent in the last hour"),\n')
    edited = text.replace(window, "")
    assert edited != text
    (copy / "fraud.py").write_text(edited)
    again = repo.load(cfg)
    assert "customer_sum_amount_1h" not in [w.name for w in again.windows]
    assert len(again.windows) == len(first.windows) - 1


def test_a_request_function_that_cannot_run_alone_is_refused_at_apply(tmp_path):
    """The engines run a request function from its source, without the repo's module: one
    that leans on a module global, or misses a schema field, is refused by the compiler."""
    copy = tmp_path / "repo"
    shutil.copytree(repo.SHIPPED, copy, ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    text = (copy / "fraud.py").read_text()
    night = '"tx_during_night": [int((s % 86400) // 3600 <= 6) for s in seconds],'
    assert night in text
    text = text.replace(night, night.replace("<= 6", "<= NIGHT"))
    (copy / "fraud.py").write_text(text + "\nNIGHT = 6  # works for Feast, not on its own\n")
    cfg = Config()
    cfg.features.repo = str(copy)
    with pytest.raises(RepoError) as info:
        repo.compile_repo(repo.repo_dir(cfg), cfg)
    (problem,) = info.value.problems
    assert problem.obj == "OnDemandFeatureView transaction_features"
    assert "NameError: name 'NIGHT' is not defined" in problem.reason


PRODUCT = ("analytics", "bus", "evaluation", "ffs", "jobs", "online", "transformations",
           "validation")
# where the shipped repo may be named: the demo and the traffic generator (they show it)
SHOWS_THE_REPO = {"jobs/demo/run.py", "jobs/demo/stream.py", "analytics/demo.py",
                  "jobs/tools/generate.py"}
# event columns of the data model that are also request features of the shipped repo
EVENT_COLUMNS = {"amount"}


def test_no_product_module_names_a_feature_of_the_shipped_repo():
    """The features live in feature_repo/ (with its analyst queries), the demo, the traffic
    generator and the tests; product code reads them from the loaded repo."""
    import re

    names = [n for n in feature_names() if n not in EVENT_COLUMNS]
    found = []
    for pkg in PRODUCT:
        for path in sorted((PROJECT_ROOT / pkg).rglob("*.py")):
            rel = str(path.relative_to(PROJECT_ROOT))
            if rel in SHOWS_THE_REPO:
                continue
            text = path.read_text()
            found += [(rel, n) for n in names if re.search(rf"\b{n}\b", text)]
    assert found == []


def test_the_behaviour_function_on_hand_written_rows():
    """z-score (null under 2 payments or no spread), first time at the terminal (first seen
    0 s ago, or the pair not stored yet), distance and speed from the previous terminal (null
    without coordinates or without a previous payment); the same as Feast's own call."""
    from feature_repo.fraud import behaviour_features
    from ffs.transformations.features import REQUEST_FUNCTIONS

    fn = next(f for f in REQUEST_FUNCTIONS if f.view == "behaviour_features")
    rows = [  # amount, mean, std, pair first seen, x, y, previous x, y, seconds since previous
        (30.0, 20.0, 5.0, 0.0, 3.0, 4.0, 0.0, 0.0, 1800.0),  # z 2, new, 5 units in 30 min
        (20.0, 20.0, 0.0, 86400.0, 3.0, 4.0, 3.0, 4.0, 60.0),  # no spread; same terminal
        (10.0, None, None, None, None, None, 1.0, 1.0, None),  # first payment, no location
        (10.0, 12.0, 2.0, 3600.0, 1.0, 1.0, None, None, 0.0),  # previous had no location
        (10.0, 12.0, 2.0, 3600.0, 1.0, 1.0, 1.0, 2.0, 0.0),  # same second: no speed
    ]
    cols = list(zip(*rows, strict=True))
    request = {"amount": list(cols[0]), "terminal_x": list(cols[4]),
               "terminal_y": list(cols[5])}
    feats = {"customer_avg_amount_30d": list(cols[1]), "customer_std_amount_30d": list(cols[2]),
             "customer_terminal_first_seen_30d": list(cols[3]),
             "customer_prev_terminal_x": list(cols[6]), "customer_prev_terminal_y": list(cols[7]),
             "customer_secs_since_prev_tx": list(cols[8])}
    got = fn.apply([0] * len(rows), request, feats)
    assert got["amount_zscore_30d"] == [2.0, None, None, -1.0, -1.0]
    assert got["first_time_at_terminal"] == [1, 0, 1, 0, 0]
    assert got["distance_from_prev_terminal"] == [5.0, 0.0, None, None, 1.0]
    assert got["speed_from_prev_terminal"] == [10.0, 0.0, None, None, None]
    assert got == behaviour_features.feature_transformation.udf({**request, **feats})
