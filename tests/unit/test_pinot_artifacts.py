"""Pinot artifacts are generated from the feature definitions and the committed copies match;
the pure parts of the client (LIMIT, result parsing, config comparison). No services."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from ffs.analytics import pinot_config as pc
from ffs.analytics.pinot_apply import contains, fill
from ffs.analytics.pinot_client import to_frame, with_limit
from ffs.config import Config, Secret
from ffs.errors import ConfigError
from ffs.transformations import features as windows
from ffs.transformations.features import feature_dtypes, feature_names

INFRA = Path(__file__).resolve().parents[2] / "infra" / "pinot"
TYPES = {"int64": "LONG", "int32": "INT", "float64": "DOUBLE"}


def columns(schema: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for group in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs"):
        for spec in schema.get(group, []):
            assert spec["name"] not in out, f"{spec['name']} declared twice"
            out[spec["name"]] = spec["dataType"]
    return out


def test_committed_files_are_what_the_generator_produces():
    expected = pc.artifacts(Config())
    on_disk = {p.name for p in INFRA.iterdir() if p.is_file()}
    assert on_disk == set(expected), "infra/pinot has extra or missing files"
    for name, text in expected.items():
        assert (INFRA / name).read_text(encoding="utf-8") == text, (
            f"infra/pinot/{name} differs from the generator: run `ffs pinot generate`")


def test_generation_is_stable_and_sorted(tmp_path):
    a = pc.artifacts(Config())
    assert a == pc.artifacts(Config())
    table = a["ffs_enriched.table.json"]
    assert table == json.dumps(json.loads(table), indent=2, sort_keys=True) + "\n"
    written = pc.write_artifacts(tmp_path / "out", Config())
    assert {p.name: p.read_text() for p in written} == a


def test_every_feature_is_a_column_of_both_tables_with_its_type():
    dtypes = feature_dtypes()
    for schema in (pc.enriched_schema(), pc.agg_schema()):
        cols = columns(schema)
        for name in feature_names():
            assert cols.get(name) == TYPES[dtypes[name]], (schema["schemaName"], name)
    cols = columns(pc.enriched_schema())
    base = {"transaction_id": "STRING", "customer_id": "STRING", "terminal_id": "STRING",
            "kind": "STRING", "amount": "DOUBLE", "is_fraud": "INT",
            # the udf's night flag and the optional coordinates
            "is_night": "DOUBLE", "terminal_x": "DOUBLE", "terminal_y": "DOUBLE",
            "event_time_ms": "LONG", "label_time_ms": "LONG", "processed_at_ms": "LONG"}
    assert cols == {**base, **{n: TYPES[dtypes[n]] for n in feature_names()}}
    assert pc.enriched_schema()["primaryKeyColumns"] == ["transaction_id"]
    time_spec = {s["name"]: s for s in pc.enriched_schema()["dateTimeFieldSpecs"]}
    assert time_spec["event_time_ms"]["format"] == "1:MILLISECONDS:EPOCH"


def test_a_new_feature_reaches_the_schema_without_editing_pinot_code(monkeypatch):
    extra = windows.RecencyFeature("terminal_secs_since_prev_tx", windows.entity("terminal"),
                                   horizon=timedelta(days=30))
    monkeypatch.setattr(windows, "RECENCY_FEATURES", windows.RECENCY_FEATURES + (extra,))
    assert columns(pc.enriched_schema())["terminal_secs_since_prev_tx"] == "DOUBLE"
    assert pc.artifacts(Config()) != {p.name: p.read_text() for p in INFRA.iterdir()}


OTHER_REPO = r"""
import json
from ffs.analytics import olap_store, pinot_config as pc
from ffs.config import load_config
from tests.unit.test_pinot_artifacts import columns
agg = pc.agg_table(load_config())
print("RESULT " + json.dumps({
    "enriched": columns(pc.enriched_schema()), "agg": columns(pc.agg_schema()),
    "star": agg["tableIndexConfig"]["starTreeIndexConfigs"][0],
    "inverted": pc.enriched_table(load_config())["tableIndexConfig"]["invertedIndexColumns"],
    "readme": pc.artifacts(load_config())["README.md"], "duckdb": olap_store.COLUMNS[:8]}))
"""


def test_another_repos_tables_have_its_keys_value_columns_and_rollup(tmp_path):
    """tests/fixtures/payments_repo (keys account_id, device_id, ip; value columns amount,
    declined and the text channel; its fraud rate on ip): the same generator, no change."""
    import os
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "payments_repo"
    shutil.copytree(root / "tests" / "fixtures" / "payments_repo", repo,
                    ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    run = subprocess.run([sys.executable, "-c", OTHER_REPO], cwd=root, capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "FFS_FEATURES_REPO": str(repo),
                              "FFS_IDS_TRANSACTION_ID": "string"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    enriched = out["enriched"]
    for name in ("transaction_id", "account_id", "device_id", "ip", "channel", "kind"):
        assert enriched[name] == "STRING", name
    assert enriched["amount"] == enriched["declined"] == "DOUBLE"
    assert "customer_id" not in enriched and "terminal_id" not in enriched
    assert enriched["ip_fraud_rate_14d_lag3d"] == "DOUBLE"
    star = out["star"]
    assert star["dimensionsSplitOrder"] == ["event_day", "event_hour", "ip"]
    assert {"SUM__amount", "MAX__amount", "SUM__declined", "DISTINCTCOUNTHLL__account_id",
            "DISTINCTCOUNTHLL__device_id", "AVG__ip_fraud_rate_14d_lag3d"} <= set(
                star["functionColumnPairs"])
    assert all(p.split("__", 1)[1] in out["agg"] or p == "COUNT__*"
               for p in star["functionColumnPairs"])
    assert out["inverted"][0] == "ip" and set(out["inverted"]) == {"ip", "account_id",
                                                                    "device_id"}
    assert "star-tree on (day, hour, ip)" in out["readme"]
    assert dict(out["duckdb"])["channel"] == "VARCHAR"
    assert dict(out["duckdb"])["declined"] == "DOUBLE"


def test_an_unsupported_dtype_fails_naming_the_feature(monkeypatch):
    odd = windows.RequestFeature("merchant_category", "object")
    monkeypatch.setattr(windows, "REQUEST_FEATURES", windows.REQUEST_FEATURES + (odd,))
    with pytest.raises(ConfigError, match="merchant_category.*'object'"):
        pc.enriched_schema()


def test_upsert_table_is_partial_with_the_rules_pinot_requires():
    t = pc.enriched_table(Config())
    up = t["upsertConfig"]
    assert up["mode"] == "PARTIAL" and up["defaultPartialUpsertStrategy"] == "OVERWRITE"
    # Pinot 0.11 reads one comparisonColumn; it ignores the list form of 1.x
    assert up["comparisonColumn"] == "processed_at_ms" and "comparisonColumns" not in up
    assert set(up["partialUpsertStrategies"]) <= set(columns(pc.enriched_schema()))
    assert t["routing"]["instanceSelectorType"] == "strictReplicaGroup"
    assert t["tableIndexConfig"]["nullHandlingEnabled"] is True
    assert "starTreeIndexConfigs" not in t["tableIndexConfig"]  # Pinot forbids it with upsert
    # every row has processed_at_ms; a label row has no event time, and Pinot would fill a
    # null time column with the wall clock
    assert t["segmentsConfig"]["timeColumnName"] == "processed_at_ms"
    # 0.11 reads replicasPerPartition for a REALTIME table
    assert t["segmentsConfig"]["replicasPerPartition"] == t["segmentsConfig"]["replication"]


def test_agg_table_is_append_only_with_a_star_tree_on_real_columns():
    t = pc.agg_table(Config())
    assert "upsertConfig" not in t
    cols = columns(pc.agg_schema())
    derived = {c["columnName"] for c in t["ingestionConfig"]["transformConfigs"]}
    assert derived <= set(cols)
    (star,) = t["tableIndexConfig"]["starTreeIndexConfigs"]
    assert set(star["dimensionsSplitOrder"]) <= set(cols)
    assert "terminal_id" in star["dimensionsSplitOrder"]
    pairs = star["functionColumnPairs"]
    assert "COUNT__*" in pairs and "SUM__amount" in pairs
    for pair in pairs:
        fn, col = pair.split("__", 1)
        assert col == "*" or col in cols, pair
    assert any(p.startswith("MAX__") and "nb_tx" in p for p in pairs)  # a velocity feature
    assert "kind" in t["ingestionConfig"]["filterConfig"]["filterFunction"]


def test_stream_config_comes_from_kafka_and_pinot_settings():
    cfg = Config()
    cfg.kafka.enriched_topic = "prod.enriched"
    cfg.kafka.bootstrap_servers = "kafka-local:9092"
    s = pc.stream_config(cfg)
    assert s["stream.kafka.topic.name"] == "prod.enriched"
    assert s["stream.kafka.broker.list"] == "kafka-local:9092"
    assert s["stream.kafka.decoder.class.name"] == \
        "org.apache.pinot.plugin.stream.kafka.KafkaJSONMessageDecoder"
    # Pinot 0.11 (infra/jvm/pinot): the Kafka 2.x plugin, and a consumer type it requires
    assert s["stream.kafka.consumer.factory.class.name"] == \
        "org.apache.pinot.plugin.stream.kafka20.KafkaConsumerFactory"
    assert s["stream.kafka.consumer.type"] == "lowlevel"
    cfg.pinot.stream_bootstrap_servers = "kafka.internal:9093"  # what Pinot's servers see
    assert pc.stream_config(cfg)["stream.kafka.broker.list"] == "kafka.internal:9093"
    assert pc.stream_config(Config())["stream.kafka.broker.list"] == "${KAFKA_BOOTSTRAP_SERVERS}"
    assert "security.protocol" not in s


def test_sasl_settings_are_written_but_never_the_password(tmp_path):
    cfg = Config()
    cfg.kafka.bootstrap_servers = "broker:9094"
    cfg.kafka.security_protocol = "SASL_SSL"
    cfg.kafka.sasl_mechanism = "SCRAM-SHA-512"
    cfg.kafka.sasl_username = "ffs-pinot"
    cfg.kafka.sasl_password = Secret("pw-9f8e7d-do-not-leak")
    cfg.kafka.ssl_ca_location = "/etc/kafka/ca.pem"
    pc.write_artifacts(tmp_path, cfg)
    for path in tmp_path.iterdir():
        assert "pw-9f8e7d-do-not-leak" not in path.read_text(), path.name
    s = json.loads((tmp_path / "ffs_enriched.table.json").read_text())[
        "ingestionConfig"]["streamIngestionConfig"]["streamConfigMaps"][0]
    assert s["security.protocol"] == "SASL_SSL" and s["sasl.mechanism"] == "SCRAM-SHA-512"
    assert s["sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule '
                                     'required username="ffs-pinot" '
                                     'password="${KAFKA_SASL_PASSWORD}";')
    assert s["ssl.truststore.location"] == "/etc/kafka/ca.pem"
    cfg.kafka.sasl_username = None
    with pytest.raises(ConfigError, match="sasl_username"):
        pc.stream_config(cfg)


def test_readme_names_the_generator_and_the_superset_url():
    text = pc.artifacts(Config())["README.md"]
    assert "ffs pinot generate" in text and "do not edit" in text
    assert "pinot://broker:8099/query/sql?controller=http://controller:9000/" in text


def test_documented_superset_url_is_one_pinotdb_understands():
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(pc.SQLALCHEMY_URL)  # builds the dialect; connects to nothing
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    assert engine.dialect.name == "pinot"
    assert (kwargs["host"], kwargs["port"], kwargs["path"]) == ("broker", 8099, "query/sql")


@pytest.mark.parametrize("sql, expected, appended", [
    ("SELECT * FROM t", "SELECT * FROM t\nLIMIT 500", True),
    ("SELECT * FROM t;  ", "SELECT * FROM t\nLIMIT 500", True),
    ("select * from t limit 20", "select * from t limit 20", False),
    ("SELECT * FROM t LIMIT 10 OFFSET 20", "SELECT * FROM t LIMIT 10 OFFSET 20", False),
    ("SELECT * FROM t LIMIT 20, 10", "SELECT * FROM t LIMIT 20, 10", False),
    ("SELECT * FROM t WHERE k = 'x limit 5'", "SELECT * FROM t WHERE k = 'x limit 5'\nLIMIT 500",
     True),
    ("SELECT * FROM t -- no limit 5", "SELECT * FROM t -- no limit 5\nLIMIT 500", True),
    ("SELECT * FROM t LIMIT 7 -- top seven", "SELECT * FROM t LIMIT 7 -- top seven", False),
    ("SELECT * FROM (SELECT * FROM t LIMIT 5) WHERE a > 1",
     "SELECT * FROM (SELECT * FROM t LIMIT 5) WHERE a > 1\nLIMIT 500", True),
    ("SELECT delimit FROM t", "SELECT delimit FROM t\nLIMIT 500", True),
])
def test_limit_is_added_only_when_the_outer_query_has_none(sql, expected, appended):
    assert with_limit(sql, 500) == (expected, appended)


def test_result_table_becomes_typed_columns_with_nulls():
    df = to_frame({"dataSchema": {"columnNames": ["id", "n", "x", "ok", "ts"],
                                  "columnDataTypes": ["STRING", "LONG", "DOUBLE", "BOOLEAN",
                                                      "TIMESTAMP"]},
                   "rows": [["a", 3, 1.5, True, "2018-07-31 23:00:00.0"],
                            ["b", None, None, None, "2018-08-01 00:00:00.0"]]})
    assert str(df["n"].dtype) == "Int64" and df["n"].isna().tolist() == [False, True]
    assert df["x"].dtype == "float64" and pd.isna(df["x"][1])
    assert str(df["ok"].dtype) == "boolean"
    assert df["ts"][0] == pd.Timestamp("2018-07-31 23:00", tz="UTC")
    assert to_frame(None).empty


def test_contains_ignores_defaults_pinot_adds_but_not_changed_values():
    want = {"a": {"b": "1", "c": [1, {"d": 2}]}, "e": {}}
    have = {"a": {"b": 1, "c": [1, {"d": 2, "z": 0}], "y": True}, "e": {"broker": "x"}}
    assert contains(have, want)
    assert not contains(have, {"a": {"b": "2"}})
    assert not contains(have, {"a": {"c": [1]}})  # a list item removed is a change
    assert not contains(have, {"missing": 1})


def test_fill_replaces_placeholders_and_refuses_unset_ones():
    obj = {"x": ['password="${KAFKA_SASL_PASSWORD}";'], "y": "${KAFKA_BOOTSTRAP_SERVERS}"}
    out = fill(obj, {"${KAFKA_SASL_PASSWORD}": 'p"w', "${KAFKA_BOOTSTRAP_SERVERS}": "k:1"}, "f")
    assert out == {"x": ['password="p"w";'], "y": "k:1"}
    assert obj["y"] == "${KAFKA_BOOTSTRAP_SERVERS}"  # the loaded file is not modified
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        fill(obj, {"${KAFKA_SASL_PASSWORD}": "pw", "${KAFKA_BOOTSTRAP_SERVERS}": None}, "f")
