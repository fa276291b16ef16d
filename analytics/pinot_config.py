"""Pinot schemas and REALTIME table configs, generated from the feature definitions.

Two tables read the enriched topic (bus/messages.py):
- `ffs_enriched`: one row per transaction_id, PARTIAL upsert. The transaction row brings the
  features, the label row (same key, later) brings is_fraud and label_time_ms; a null field
  keeps the value already stored, so the label does not wipe the features and a corrected
  transaction row does not wipe the label. What analysts and the analyst queries read.
- `ffs_enriched_agg`: append-only copy of the transaction rows with a star-tree index for
  fast per-hour rollups, per id of the entity the repo's risk feature (its shortest fraud
  rate) is keyed by. A separate table because Pinot forbids a star-tree on an upsert table.

Written for the Pinot this project pins and runs, 0.11.0 (infra/jvm/pinot; started by
analytics/pinot_cluster.py; tests/integration/test_pinot_live.py applies these configs to it
for real): the Kafka 2.x consumer factory, `stream.kafka.consumer.type` (0.11 requires it),
`replicasPerPartition` (what 0.11 reads for a REALTIME table) and one `comparisonColumn`
(0.11 has no list form). Moving to Pinot 1.x means revisiting these four.

Nothing here is hand-copied: the id columns are the transaction id and the loaded feature
repo's join keys (KEY_COLUMNS), the value columns its VALUE_COLUMNS, and every feature column
comes from `feature_names()` and `feature_dtypes()` (transformations/features.py), so a
feature added to the repo reaches Pinot with `ffs pinot generate` (tests fail until the
files in infra/pinot are regenerated).
Secrets never reach a generated file: the SASL password is the placeholder
`${KAFKA_SASL_PASSWORD}`, filled in by `analytics.pinot_apply` only in the request it sends.
"""

from __future__ import annotations

import json
from pathlib import Path

from ffs.config import Config
from ffs.errors import ConfigError
from ffs.transformations.features import (
    ENTITIES,
    KEY_COLUMNS,
    VALUE_COLUMNS,
    WINDOW_FEATURES,
    Agg,
    Entity,
    feature_dtypes,
    feature_names,
)

ENRICHED = "ffs_enriched"
AGG = "ffs_enriched_agg"
DECODER = "org.apache.pinot.plugin.stream.kafka.KafkaJSONMessageDecoder"
# pinot-kafka-2.0: in 0.11 the only Kafka plugin (kafka30 came with Pinot 1.x)
CONSUMER_FACTORY = "org.apache.pinot.plugin.stream.kafka20.KafkaConsumerFactory"
PASSWORD_PLACEHOLDER = "${KAFKA_SASL_PASSWORD}"
SERVERS_PLACEHOLDER = "${KAFKA_BOOTSTRAP_SERVERS}"  # when the config names no Kafka
PLACEHOLDERS = (PASSWORD_PLACEHOLDER, SERVERS_PLACEHOLDER)
# Longer than any window + label delay (37 days), so a month-over-month comparison still
# finds last month's rows.
RETENTION_DAYS = 180
REPLICATION = 1  # raise it in production once the servers' count is known
DEFAULT_DIR = Path("infra/pinot")
TIME_COLUMN = "processed_at_ms"
SQLALCHEMY_URL = "pinot://broker:8099/query/sql?controller=http://controller:9000/"

_PINOT_TYPES = {"int32": "INT", "int64": "LONG", "float32": "FLOAT", "float64": "DOUBLE"}
# Columns of the enriched message besides the features (bus/messages.py), with their type:
# ids and text value columns are STRING dimensions, number value columns DOUBLE metrics.
_IDS = ("transaction_id", *KEY_COLUMNS,
        *(c for c, kind in VALUE_COLUMNS.items() if kind != "number"))
_BASE_METRICS = {c: "DOUBLE" for c, kind in VALUE_COLUMNS.items() if kind == "number"}
_TIMES = ("event_time_ms", "label_time_ms", "processed_at_ms")


def pinot_type(name: str, dtype: str) -> str:
    try:
        return _PINOT_TYPES[dtype]
    except KeyError:
        raise ConfigError(f"feature {name!r} has dtype {dtype!r}, which has no Pinot column "
                          f"type here; supported: {sorted(_PINOT_TYPES)}") from None


def feature_columns() -> list[tuple[str, str]]:
    """(name, Pinot type) of every feature, in `feature_names()` order. A feature that is
    also a value column of the message (the shipped repo's amount) must agree on its type,
    and is listed once."""
    dtypes = feature_dtypes()
    out = []
    for name in feature_names():
        typ = pinot_type(name, dtypes[name])
        if name in _BASE_METRICS and typ != _BASE_METRICS[name]:
            raise ConfigError(f"feature {name!r} is {typ} but the enriched message's "
                              f"{name!r} column is {_BASE_METRICS[name]}")
        if name in _IDS or name in _TIMES or name in ("kind", "is_fraud"):
            raise ConfigError(f"feature {name!r} collides with an enriched message column")
        out.append((name, typ))
    return out


def _datetime(name: str) -> dict:
    return {"name": name, "dataType": "LONG", "format": "1:MILLISECONDS:EPOCH",
            "granularity": "1:MILLISECONDS"}


def _metrics(labels: bool) -> list[dict]:
    cols = dict(_BASE_METRICS)
    cols.update(feature_columns())  # a value column that is also a feature: one column
    if labels:
        cols["is_fraud"] = "INT"  # null until the label arrives
    return [{"name": n, "dataType": t} for n, t in cols.items()]


def enriched_schema() -> dict:
    return {
        "schemaName": ENRICHED,
        "primaryKeyColumns": ["transaction_id"],
        "dimensionFieldSpecs": [{"name": n, "dataType": "STRING"} for n in _IDS + ("kind",)],
        "metricFieldSpecs": _metrics(labels=True),
        "dateTimeFieldSpecs": [_datetime(n) for n in _TIMES],
    }


def agg_schema() -> dict:
    return {
        "schemaName": AGG,
        "dimensionFieldSpecs": (
            [{"name": n, "dataType": "STRING"} for n in _IDS + ("kind",)]
            # buckets computed at ingestion (below): star-tree dimensions must be columns
            + [{"name": "event_hour", "dataType": "LONG"},
               {"name": "event_day", "dataType": "LONG"}]),
        "metricFieldSpecs": _metrics(labels=False),
        "dateTimeFieldSpecs": [_datetime("event_time_ms"), _datetime("processed_at_ms")],
    }


def _jaas_module(mechanism: str) -> str:
    if mechanism == "PLAIN":
        return "org.apache.kafka.common.security.plain.PlainLoginModule"
    if mechanism.startswith("SCRAM-"):
        return "org.apache.kafka.common.security.scram.ScramLoginModule"
    raise ConfigError(f"kafka.sasl_mechanism={mechanism!r}: Pinot configs are generated for "
                      f"PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 only")


def stream_config(cfg: Config) -> dict[str, str]:
    """Kafka settings for Pinot's servers. Pinot passes un-prefixed keys (security.protocol,
    sasl.*, ssl.*) to its Java Kafka consumer as they are."""
    k = cfg.kafka
    servers = cfg.pinot.stream_bootstrap_servers or k.bootstrap_servers or SERVERS_PLACEHOLDER
    s = {
        "streamType": "kafka",
        "stream.kafka.topic.name": k.enriched_topic,
        "stream.kafka.broker.list": servers,
        "stream.kafka.decoder.class.name": DECODER,
        "stream.kafka.consumer.factory.class.name": CONSUMER_FACTORY,
        # 0.11 refuses a stream config without it ("Could not create StreamConfig");
        # lowlevel = one consumer per partition, which upsert tables need
        "stream.kafka.consumer.type": "lowlevel",
        "stream.kafka.consumer.prop.auto.offset.reset": "smallest",
        # a consuming segment closes at 50,000 rows or 6 h, whichever first: closed segments
        # are immutable, sorted and get the range and inverted indexes below, which one
        # ever-growing consuming segment (the size-only threshold before) never gets
        "realtime.segment.flush.threshold.rows": "50000",
        "realtime.segment.flush.threshold.time": "6h",
    }
    if k.security_protocol != "PLAINTEXT":
        s["security.protocol"] = k.security_protocol
    if k.sasl_mechanism:
        if not k.sasl_username:
            raise ConfigError(f"kafka.sasl_mechanism={k.sasl_mechanism} needs "
                              f"kafka.sasl_username")
        s["sasl.mechanism"] = k.sasl_mechanism
        # The password stays a placeholder here whatever the config holds: this text is
        # written to a file that gets committed. pinot_apply fills it in when sending.
        s["sasl.jaas.config"] = (f'{_jaas_module(k.sasl_mechanism)} required '
                                 f'username="{k.sasl_username}" '
                                 f'password="{PASSWORD_PLACEHOLDER}";')
    if k.ssl_ca_location:
        # librdkafka takes a PEM CA file; the Java client reads the same file as a PEM
        # truststore (Kafka 2.7+). The path must exist on Pinot's servers.
        s["ssl.truststore.type"] = "PEM"
        s["ssl.truststore.location"] = k.ssl_ca_location
    return s


def _table(name: str, cfg: Config, null_handling: bool) -> dict:
    return {
        "tableName": name,
        "tableType": "REALTIME",
        "tenants": {},
        "segmentsConfig": {
            "schemaName": name,
            # processed_at_ms, not event_time_ms: every row carries it (a label row has no
            # event time, and Pinot fills a null *time column* with the wall clock, which
            # would become "now" for every query), and retention counts from when a row
            # was processed, so a replay of last year's events is not purged at once.
            "timeColumnName": TIME_COLUMN,
            "retentionTimeUnit": "DAYS",
            "retentionTimeValue": str(RETENTION_DAYS),
            "replication": str(REPLICATION),
            # what 0.11 reads for a REALTIME table ("Field replicasPerPartition needs to be
            # specified" otherwise)
            "replicasPerPartition": str(REPLICATION),
        },
        "tableIndexConfig": {"loadMode": "MMAP", "nullHandlingEnabled": null_handling},
        "ingestionConfig": {"streamIngestionConfig": {"streamConfigMaps": [stream_config(cfg)]}},
        "metadata": {"customConfigs": {"generatedBy": "ffs pinot generate"}},
    }


def enriched_table(cfg: Config) -> dict:
    t = _table(ENRICHED, cfg, null_handling=True)  # PARTIAL upsert requires it
    # the analyst queries filter on time ranges and group by an entity's id: every join
    # key, the rollup entity's first (as the star-tree of the agg table splits by it)
    rollup = _rollup_keys()
    t["tableIndexConfig"].update({"rangeIndexColumns": ["event_time_ms", "label_time_ms"],
                                  "invertedIndexColumns": [
                                      *rollup, *(k for k in KEY_COLUMNS if k not in rollup)]})
    # Upsert needs every row of a key on one server: the topic is keyed by transaction_id,
    # so Kafka partitions already split by key; strictReplicaGroup keeps a query on the
    # replica holding all of a partition's segments.
    t["routing"] = {"instanceSelectorType": "strictReplicaGroup"}
    t["upsertConfig"] = {
        "mode": "PARTIAL",
        # OVERWRITE with a null new value keeps the stored one: labels keep the features,
        # corrected transaction rows keep the label, a revised label replaces is_fraud.
        "defaultPartialUpsertStrategy": "OVERWRITE",
        # kind keeps the first non-null value ("transaction" when it came first), so
        # "kind = 'transaction'" does not lose the transaction once its label arrives.
        "partialUpsertStrategies": {"kind": "IGNORE"},
        # The newest processing wins: a re-published (corrected) transaction row replaces
        # the earlier one even though both carry the same event_time_ms. One column, not
        # the list form `comparisonColumns` of Pinot 1.x, which 0.11 ignores (it answers
        # with unrecognizedProperties and compares on the time column instead).
        "comparisonColumn": "processed_at_ms",
    }
    return t


def _risk_feature():
    rates = [f for f in WINDOW_FEATURES if f.agg == Agg.FRAUD_RATE]
    return min(rates, key=lambda f: (f.window_s, f.name)) if rates else None


def rollup_entity() -> Entity | None:
    """The entity the star-tree rolls up by: the one the risk feature (the shortest fraud
    rate) is keyed by, what risk dashboards group by; None without a fraud rate."""
    risk = _risk_feature()
    return risk.entity if risk is not None else None


def _rollup_keys() -> tuple[str, ...]:
    entity = rollup_entity()
    return entity.keys if entity is not None else ()


def _velocity_and_risk() -> tuple[list[str], list[str]]:
    """Shortest undelayed count per entity (velocity) and shortest fraud rate (risk)."""
    velocity, risk = [], []
    for entity in ENTITIES:
        counts = [f for f in WINDOW_FEATURES
                  if f.entity == entity and f.agg == Agg.COUNT and f.delay_s == 0]
        if counts:
            velocity.append(min(counts, key=lambda f: f.window_s).name)
    rate = _risk_feature()
    if rate is not None:
        risk.append(rate.name)
    return velocity, risk


def agg_table(cfg: Config) -> dict:
    # Star-trees ignore nulls and every aggregated column here is never null on a
    # transaction row (counts, sums, rates), so null handling stays off.
    t = _table(AGG, cfg, null_handling=False)
    velocity, risk = _velocity_and_risk()
    rollup = _rollup_keys()
    numbers = list(_BASE_METRICS)
    t["ingestionConfig"].update({
        # Label rows carry neither join keys nor event_time_ms, so they cannot be
        # bucketed: labelled fraud is read from ffs_enriched, where labels join their
        # transaction. A row is dropped when the filter is true.
        "filterConfig": {"filterFunction": "strcmp(kind, 'transaction') <> 0"},
        "transformConfigs": [
            {"columnName": "event_hour", "transformFunction": "toEpochHours(event_time_ms)"},
            {"columnName": "event_day", "transformFunction": "toEpochDays(event_time_ms)"},
        ],
    })
    t["tableIndexConfig"]["starTreeIndexConfigs"] = [{
        "dimensionsSplitOrder": ["event_day", "event_hour", *rollup],
        "skipStarNodeCreationForDimensions": [],
        # per value column its sum and maximum; the other entities' ids counted distinct
        "functionColumnPairs": (["COUNT__*"]
                                + [f"{fn}__{c}" for c in numbers for fn in ("SUM", "MAX")]
                                + [f"DISTINCTCOUNTHLL__{k}" for k in KEY_COLUMNS
                                   if k not in rollup]
                                + [f"MAX__{v}" for v in velocity]
                                + [f"AVG__{r}" for r in risk]),
        "maxLeafRecords": 10000,
    }]
    return t


def _json(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def artifacts(cfg: Config) -> dict[str, str]:
    """File name -> exact text; the same config always gives the same bytes."""
    return {
        f"{ENRICHED}.schema.json": _json(enriched_schema()),
        f"{ENRICHED}.table.json": _json(enriched_table(cfg)),
        f"{AGG}.schema.json": _json(agg_schema()),
        f"{AGG}.table.json": _json(agg_table(cfg)),
        "README.md": _readme(cfg),
    }


def write_artifacts(out_dir: str | Path, cfg: Config) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in artifacts(cfg).items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _readme(cfg: Config) -> str:
    n = len(feature_columns())
    values = "".join(f"`{c}`, " for c in VALUE_COLUMNS)
    entity = rollup_entity()
    star = f"day, hour, {entity.name}" if entity is not None else "day, hour"
    lacking = entity.name if entity is not None else "join key"
    return f"""# Pinot tables for the enriched topic

Generated by `ffs pinot generate` from the feature repo and the config: do not edit
by hand (a test fails when these files differ from what the generator produces). The
committed files come from the default config; regenerate with yours before applying
elsewhere, or let `ffs pinot apply` fill the placeholders.

- `{ENRICHED}.schema.json`: one row per `transaction_id` (primary key): ids, `kind`,
  {values}the {n} features, `is_fraud`, `label_time_ms`, `event_time_ms`,
  `processed_at_ms` (the time column: every row has it; retention counts from it).
- `{ENRICHED}.table.json`: REALTIME table fed from topic `{cfg.kafka.enriched_topic}`,
  PARTIAL upsert: a null field keeps the stored value, so the label row adds `is_fraud` to
  its transaction; the newest `processed_at_ms` wins, so a corrected row replaces the old one.
- `{AGG}.schema.json`: append-only copy of the transaction rows, plus `event_hour` /
  `event_day` buckets.
- `{AGG}.table.json`: REALTIME table, same topic, no upsert (Pinot forbids a star-tree on
  an upsert table), star-tree on ({star}); label rows are filtered out (they
  carry no {lacking}). A re-published (corrected) transaction appears twice here: exact
  counts come from `{ENRICHED}`.

Pinot version: written for Apache Pinot 0.11.0, the version this project pins
(infra/jvm/pinot) and runs locally with `ffs pinot up [--apply --kafka HOST:PORT]`; the
tests apply them to it and compare every analyst query with the embedded DuckDB store. A row
whose `processed_at_ms` is older than the stored one for its key is dropped by the upsert
(out of order): the stream stamps `processed_at_ms` when it publishes, so this happens only
to replays of an older copy of the topic.

Apply (schemas first, then tables; running it again changes nothing):

    ffs pinot apply --controller http://controller:9000

Placeholders: `{SERVERS_PLACEHOLDER}` stands for the Kafka servers when the config names
none (`pinot.stream_bootstrap_servers`, else `kafka.bootstrap_servers`); `{PASSWORD_PLACEHOLDER}`
stands for the SASL password, which is never written to a file. `ffs pinot apply` fills
both from the config (FFS_KAFKA_SASL_PASSWORD, ...) or the environment variable of the same
name, in the request only. Applying these files another way (pinot-admin AddTable, the
controller UI) needs the same substitution first, e.g. with `envsubst`.

Querying: `ffs pinot query "SELECT ..."` (adds an explicit LIMIT when there is none: Pinot
silently returns 10 rows otherwise). Query-time null handling (`enableNullHandling=true`) is
not sent: 0.11 fails aggregations with it, and selections show column defaults for nulls
(0, Long.MIN_VALUE) either way; `IS NULL` filters work without it. Superset / Grafana
(pinotdb's SQLAlchemy dialect):

    {SQLALCHEMY_URL}
"""
