"""The compiler (transformations/compiler.py) on repos of any shape: a repo with many mistakes
gets every problem at once, each line naming its object, the reason and the fix; entities of
any name, composite keys and every function compile to the declarations the engines read.
Repos are built in temporary directories and collected by Feast as `feast apply` does."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from ffs.config import Config
from ffs.transformations import repo
from ffs.transformations.compiler import Compiled, Problem, RepoError, compile_objects
from ffs.transformations.declarations import Agg, Entity

PROJECT_ROOT = Path(__file__).resolve().parents[2]
H, D = timedelta(hours=1), timedelta(days=1)
STORE_YAML = textwrap.dedent("""\
    project: {name}
    provider: local
    registry: registry.db
    online_store:
      type: sqlite
    entity_key_serialization_version: 3
    """)
HEADER = '''
from datetime import timedelta
from feast import (Aggregation, Entity, FeatureService, Field, FileSource, KafkaSource,
                   StreamFeatureView, ValueType)
from feast.data_format import JsonFormat
from feast.types import Float64, Int64

H, D = timedelta(hours=1), timedelta(days=1)


def source(name, schema, time="event_timestamp"):
    return KafkaSource(name=name, kafka_bootstrap_servers="k:9092", topic=name,
                       timestamp_field=time, message_format=JsonFormat(schema_json=schema),
                       batch_source=FileSource(name=name + "_offline", path=name + ".parquet",
                                               timestamp_field=time))


def fields(aggs):
    return [Field(name=a.name, dtype=Int64 if a.function in ("count", "count_distinct")
                  else Float64) for a in aggs]
'''


def write_repo(path: Path, body: str, name: str = "t") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "feature_store.yaml").write_text(STORE_YAML.format(name=name))
    (path / "repo.py").write_text(HEADER + textwrap.dedent(body))
    return path


def compile_dir(path: Path, cfg: Config | None = None) -> Compiled:
    cfg = cfg or Config()
    cfg.features.repo = str(path)
    return repo.compile_repo(repo.repo_dir(cfg), cfg)


MANY_MISTAKES = '''
account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.STRING)
score = Entity(name="score", join_keys=["score"], value_type=ValueType.FLOAT)
payments = source("payments", "transaction_id string, account_id string, "
                              "event_timestamp timestamp, amount double, channel string")
logins = source("logins", "transaction_id string, account_id string, "
                          "event_timestamp timestamp, failed bigint")

_spend = [
    Aggregation(column="amount", function="median", time_window=H, name="spend_median_1h"),
    Aggregation(column="tip", function="sum", time_window=H, name="spend_tips_1h"),
    Aggregation(column="channel", function="std", time_window=H, name="spend_channel_std_1h"),
    Aggregation(column="is_fraud", function="fraud_rate", time_window=H, name="spend_fraud_1h"),
    Aggregation(column="amount", function="sum", time_window=D, name="spend_sum_1d"),
    Aggregation(column="event_timestamp", function="seconds_since_previous", time_window=H,
                name="spend_gap_s"),
    Aggregation(column="transaction_id", function="count", time_window=H, name="payments_1h"),
]
spend = StreamFeatureView(name="spend", entities=[account], source=payments, ttl=D,
                          aggregations=_spend, schema=fields(_spend),
                          timestamp_field="event_timestamp", tags={"ffs.delay": "1h"})
_velocity = [Aggregation(column="transaction_id", function="count", time_window=H,
                         name="payments_1h")]
velocity = StreamFeatureView(name="velocity", entities=[account], source=payments, ttl=D,
                             aggregations=_velocity, schema=fields(_velocity),
                             timestamp_field="event_timestamp")
_logins = [Aggregation(column="failed", function="sum", time_window=H, name="failed_1h")]
login_failures = StreamFeatureView(name="login_failures", entities=[account], source=logins,
                                   ttl=D, aggregations=_logins, schema=fields(_logins),
                                   timestamp_field="event_timestamp")
service = FeatureService(name="s", features=[spend, velocity, login_failures])
'''

# (object, words of the reason, words of the fix): one line per mistake of MANY_MISTAKES
EXPECTED = [
    ("Entity score", "value type", "ValueType.INT64 or ValueType.STRING"),
    ("StreamFeatureView spend, aggregation spend_median_1h", "unknown function 'median'",
     "one of count, sum, mean, min, max, std"),
    ("StreamFeatureView spend, aggregation spend_tips_1h",
     "column 'tip' is not in the source's schema", "name a column of the source"),
    ("StreamFeatureView spend, aggregation spend_channel_std_1h",
     "std needs a number; 'channel' is string", "double"),
    ("StreamFeatureView spend, aggregation spend_fraud_1h",
     "fraud_rate counts labels, and the view names no label source", '"ffs.labels"'),
    ("StreamFeatureView spend, aggregation spend_sum_1d",
     "ttl 1 day, 0:00:00 is shorter than its window plus delay (1 day, 1:00:00)",
     "ttl >= 1 day, 1:00:00"),
    ("StreamFeatureView spend, aggregation spend_gap_s", "seconds_since_previous",
     "a view without ffs.delay"),
    ("StreamFeatureView velocity, aggregation payments_1h",
     "feature name 'payments_1h' is also declared by StreamFeatureView spend",
     "give each feature its own name"),
    ("StreamFeatureView login_failures", "source 'logins'", "source=payments"),
]


def test_a_repo_with_many_mistakes_gets_every_problem_at_once(tmp_path):
    path = write_repo(tmp_path / "many", MANY_MISTAKES)
    with pytest.raises(RepoError) as info:
        compile_dir(path)
    problems = info.value.problems
    for obj, reason, fix in EXPECTED:
        found = [p for p in problems if p.obj == obj and reason in p.reason and fix in p.fix]
        assert found, (obj, reason, fix, [p.line() for p in problems])
    assert len(problems) == len(EXPECTED), [p.line() for p in problems]
    # each line names the object, then the reason, then the fix; the error lists them all
    for p in problems:
        assert p.line() == f"{p.obj}: {p.reason}; fix: {p.fix}" and p.reason and p.fix
        assert p.line() in str(info.value)
    assert str(info.value).startswith(f"{len(EXPECTED)} problem(s) in the feature repo:")


COLUMN_MISTAKES = '''
from feast.stream_feature_view import stream_feature_view

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64)
payments = KafkaSource(
    name="payments", kafka_bootstrap_servers="k:9092", topic="payments",
    timestamp_field="event_timestamp",
    message_format=JsonFormat(schema_json="transaction_id bigint, card_id bigint, "
                                          "event_timestamp timestamp, amount double, "
                                          "lat double, city string"),
    batch_source=FileSource(name="p_offline", path="p.parquet",
                            timestamp_field="event_timestamp"),
    tags={"ffs.optional": "lat,city,altitude"})
_geo = [Aggregation(column="lat", function="mean", time_window=D, name="lat_mean_1d"),
        Aggregation(column="lat", function="last", time_window=D, name="lat_last_1d")]


@stream_feature_view(entities=[card], source=payments, aggregations=_geo, schema=fields(_geo),
                     mode="python", timestamp_field="event_timestamp", ttl=D)
def geo(events: dict) -> dict:
    return {"hour": [t.hour for t in events["event_timestamp"]],
            "broken": [1 / 0 for _ in events["amount"]]}


_spend = [Aggregation(column="amount", function="sum", time_window=D, name="spend_1d")]


@stream_feature_view(entities=[card], source=payments, aggregations=_spend,
                     schema=fields(_spend), mode="pandas", timestamp_field="event_timestamp",
                     ttl=D)
def spend(df):
    return df


service = FeatureService(name="s", features=[geo, spend])
'''


def test_optional_columns_and_udfs_are_checked_with_every_problem_at_once(tmp_path):
    with pytest.raises(RepoError) as info:
        compile_dir(write_repo(tmp_path / "cols", COLUMN_MISTAKES))
    lines = [p.line() for p in info.value.problems]
    expected = [
        ("KafkaSource payments, tag ffs.optional", "'city' (string) cannot be optional",
         "leave it out"),
        ("KafkaSource payments, tag ffs.optional", "'altitude' is not in its schema",
         "schema_json"),
        ("StreamFeatureView geo, udf", "does not run on one event", "python-mode"),
        ("StreamFeatureView spend, udf", "mode", 'mode="python"'),
        ("StreamFeatureView geo, aggregation lat_mean_1d", "'lat' is optional", "last"),
    ]
    for obj, reason, fix in expected:
        assert any(p.obj == obj and reason in p.reason and fix in p.fix
                   for p in info.value.problems), (obj, reason, lines)
    assert len(lines) == len(expected), lines


def test_a_udf_derives_columns_from_the_columns_it_reads(tmp_path):
    body = COLUMN_MISTAKES.replace('"lat,city,altitude"', '"lat"').replace(
        ',\n            "broken": [1 / 0 for _ in events["amount"]]', "").replace(
        'function="mean", time_window=D, name="lat_mean_1d"',
        'function="mean", time_window=D, name="hour_mean_1d"').replace(
        'Aggregation(column="lat", function="mean"', 'Aggregation(column="hour", function="mean"')
    body = body.replace('mode="pandas"', 'mode="python"').replace(
        "def spend(df):\n    return df", "def spend(events: dict) -> dict:\n"
        "    return {\"big\": [int(a > 100) for a in events[\"amount\"]]}")
    c = compile_dir(write_repo(tmp_path / "ok", body))
    assert c.optional == ["lat"] and c.derived_columns == ("hour", "big")
    assert c.values == {"lat": "number", "amount": "number", "hour": "number", "big": "number"}
    hour, big = c.derived
    # each gets the columns it reads, and only those
    assert hour.request_inputs == ("event_timestamp",)
    assert big.request_inputs == ("amount",)
    assert big.apply([0], {"amount": [150.0]}, {}) == {"big": [1]}
    assert c.input_values == {"lat": "number", "amount": "number"}


def test_a_float_id_names_the_type_it_found(tmp_path):
    path = write_repo(tmp_path / "many", MANY_MISTAKES)
    with pytest.raises(RepoError) as info:
        compile_dir(path)
    (score,) = [p for p in info.value.problems if p.obj == "Entity score"]
    assert "FLOAT" in score.reason and "not an id type" in score.reason


def test_an_entity_whose_type_disagrees_with_the_config_is_a_problem(tmp_path):
    path = write_repo(tmp_path / "ids", '''
        account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.STRING)
        payments = source("payments", "transaction_id bigint, account_id string, "
                                      "event_timestamp timestamp")
        _a = [Aggregation(column="transaction_id", function="count", time_window=H,
                          name="payments_1h")]
        v = StreamFeatureView(name="v", entities=[account], source=payments, ttl=D,
                              aggregations=_a, schema=fields(_a),
                              timestamp_field="event_timestamp")
        service = FeatureService(name="s", features=[v])
        ''')
    cfg = Config()
    cfg.ids.keys["account_id"] = "int"
    with pytest.raises(RepoError) as info:
        compile_dir(path, cfg)
    (p,) = info.value.problems
    assert p == Problem("Entity account", "ids are string here but the config declares "
                                          "ids.account_id: int",
                        "set ids.account_id: string in the config, or the value type to match")
    # declared the same way, or not at all, it compiles
    cfg.ids.keys["account_id"] = "string"
    assert compile_dir(path, cfg).id_types == {"account_id": "string"}
    assert compile_dir(path).id_types == {"account_id": "string"}


COMPOSITE = '''
a = Entity(name="a", join_keys=["ka"], value_type=ValueType.INT64)
b = Entity(name="b", join_keys=["kb"], value_type=ValueType.STRING)
events = source("events", "transaction_id bigint, ka bigint, kb string, "
                          "event_timestamp timestamp, amount double, note string")
_pair = [
    Aggregation(column="transaction_id", function="count", time_window=7 * D,
                name="pair_count_7d"),
    Aggregation(column="amount", function="std", time_window=D, name="pair_std_1d"),
    Aggregation(column="event_timestamp", function="first_seen", time_window=7 * D,
                name="pair_first_seen_s"),
    Aggregation(column="event_timestamp", function="seconds_since_previous",
                time_window=D, name="pair_gap_s"),
]
pair = StreamFeatureView(name="pair", entities=[a, b], source=events, ttl=7 * D,
                         aggregations=_pair, schema=fields(_pair),
                         timestamp_field="event_timestamp")
_one = [Aggregation(column="note", function="count_distinct", time_window=H,
                    name="b_notes_1h")]
only_b = StreamFeatureView(name="only_b", entities=[b], source=events, ttl=D,
                           aggregations=_one, schema=fields(_one),
                           timestamp_field="event_timestamp")
service = FeatureService(name="pairs", features=[pair, only_b])
'''


def test_a_composite_key_compiles_to_one_entity_of_both_keys(tmp_path):
    c = compile_dir(write_repo(tmp_path / "pair", COMPOSITE))
    ab, only_b = Entity("a+b", ("ka", "kb")), Entity("b", ("kb",))
    assert c.entities == [ab, only_b]  # the service's order
    assert ab.composite and not only_b.composite
    assert [(w.name, w.entity, w.agg, w.window, w.column) for w in c.windows] == [
        ("pair_count_7d", ab, Agg.COUNT, 7 * D, None),
        ("pair_std_1d", ab, Agg.STD, D, "amount"),
        ("pair_first_seen_s", ab, Agg.FIRST_SEEN, 7 * D, "event_timestamp"),
        ("b_notes_1h", only_b, Agg.COUNT_DISTINCT, H, "note")]
    assert [(r.name, r.entity, r.horizon) for r in c.recency] == [("pair_gap_s", ab, D)]
    assert c.id_types == {"ka": "int", "kb": "string"}
    assert c.views == {"pair": "a+b", "only_b": "b"}
    # the event columns the windows read beyond the keys, by kind
    assert c.values == {"amount": "number", "note": "text"}
    # the cache's JSON keeps the composite entity whole
    back = Compiled.from_json(c.to_json())
    assert back.entities == c.entities and back.windows == c.windows
    assert back.recency == c.recency and back.values == c.values


def test_every_function_compiles_on_any_entity_with_and_without_a_delay():
    """The parity suite's repo declares every function the product computes: it compiles,
    each function with no delay and with one (seconds_since_previous: no delay), on an int
    entity, a text entity and their composite key."""
    cfg = Config()
    cfg.ids.transaction_id = "string"
    c = compile_dir(PROJECT_ROOT / "tests" / "fixtures" / "parity_repo", cfg)
    seen = {(w.agg, w.delay > timedelta(0)) for w in c.windows}
    assert seen == {(agg, lagged) for agg in Agg for lagged in (False, True)}
    assert {w.entity.name for w in c.windows} == {"user", "shop", "user+shop"}
    assert {r.entity.name for r in c.recency} == {"user", "user+shop"}
    assert c.id_types == {"user_id": "int", "shop_id": "string"}
    assert c.values == {"value": "number", "qty": "number", "kind": "text", "geo": "number",
                        "late": "number"}
    assert c.optional == ["geo"] and c.derived_columns == ("late",)
    assert c.input_values == {"value": "number", "qty": "number", "kind": "text",
                              "geo": "number"}
    (fn,) = c.functions
    assert set(fn.feature_inputs) == {"u_count_1h", "u_min_1d", "u_max_1d", "s_count_1h"}


def test_compile_objects_takes_feast_objects_without_a_repo_directory():
    """What `ffs apply` hands over after Feast collected the repo: the objects themselves."""
    from types import SimpleNamespace

    from feast import (
        Aggregation,
        FeatureService,
        Field,
        FileSource,
        KafkaSource,
        StreamFeatureView,
        ValueType,
    )
    from feast import Entity as FeastEntity
    from feast.data_format import JsonFormat
    from feast.types import Float64

    device = FeastEntity(name="device", join_keys=["device_id"], value_type=ValueType.STRING)
    events = KafkaSource(
        name="events", kafka_bootstrap_servers="k:9092", topic="events",
        timestamp_field="event_timestamp",
        message_format=JsonFormat(schema_json="transaction_id string, device_id string, "
                                              "event_timestamp timestamp, amount double"),
        batch_source=FileSource(name="events_offline", path="e.parquet",
                                timestamp_field="event_timestamp"))
    view = StreamFeatureView(
        name="device_amounts", entities=[device], source=events, ttl=3 * D,
        aggregations=[Aggregation(column="amount", function="last", time_window=D,
                                  name="device_last_amount")],
        schema=[Field(name="device_last_amount", dtype=Float64)],
        timestamp_field="event_timestamp", tags={"ffs.delay": "2d"})
    service = FeatureService(name="devices", features=[view])
    contents = SimpleNamespace(entities=[device], data_sources=[events],
                               stream_feature_views=[view], on_demand_feature_views=[],
                               feature_services=[service])
    c = compile_objects(contents, {"transaction_id": "string"})
    (w,) = c.windows
    assert (w.entity, w.agg, w.window, w.delay, w.column) == (
        Entity("device", ("device_id",)), Agg.LAST, D, 2 * D, "amount")
    assert c.service == "devices" and c.topics == {"events": "events"}
