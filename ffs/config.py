"""Configuration: parsed once into typed objects.

Sources, later ones winning: built-in defaults (embedded, local), a YAML file (`--config`,
or `FFS_CONFIG`, or `ffs.yaml` in the working directory when present), then environment
variables `FFS_<SECTION>_<KEY>` (e.g. FFS_OFFLINE_PATH, FFS_REDIS_URL, FFS_REDIS_PASSWORD,
FFS_SERVE_API_KEY).
Secrets are `Secret` values: they print as '***' and never reach a log line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ffs.errors import ConfigError


class Secret(str):
    """A string that does not show itself in repr/str formatting of configs or logs."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return "***"


@dataclass
class OfflineConfig:
    path: str = "data/offline"  # root of the Parquet offline store

    def table(self, name: str) -> Path:
        return Path(self.path) / name


@dataclass
class SparkConfig:
    master: str = "local[2]"
    shuffle_partitions: int = 8
    # local mode: the JVM is driver and executor; 2g keeps its RSS near 3.2 GiB, and the
    # batch jobs spill past it (BENCHMARKS.md, "Batch distributed")
    driver_memory: str = "2g"
    buckets: int = 4  # entity buckets: each is one pandas call in a Spark task
    # extra jars (spark.jars): "auto" = Spark's Kafka connector as resolved by `make setup`
    # when present; "" = none; else a comma list (e.g. local:///opt/ffs/jars/... in an image)
    jars: str = "auto"


@dataclass
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    timeout_ms: int = 50
    prefix: str = "ffs"  # every online key starts with this
    max_connections: int = 32
    # a Redis Cluster (FFS_REDIS_CLUSTER): `url` is any one node, the others are discovered;
    # reads and writes are split per slot and sent one pipeline per node (online/shards.py)
    cluster: bool = False


@dataclass
class ValidationConfig:
    data_docs_dir: str = "data/validation/data_docs"
    enabled: bool = True


@dataclass
class ServeConfig:
    """`ffs serve`: the HTTP feature server (online/server.py)."""

    host: str = "127.0.0.1"  # loopback by default: bind 0.0.0.0 on purpose, behind auth/TLS
    port: int = 6566
    api_key: Secret | None = None  # FFS_SERVE_API_KEY; when set, X-API-Key or Bearer needed
    max_batch: int = 1000  # rows per /get-online-features request
    timeout_ms: int = 100  # the whole request; past it, features answer UNAVAILABLE


@dataclass
class KafkaConfig:
    """The event bus (bus/). Empty `bootstrap_servers` means: start a local Apache Kafka
    (bus/broker.py) on a free port for this process. Any Kafka works by setting it, with SASL/TLS:
    FFS_KAFKA_BOOTSTRAP_SERVERS, FFS_KAFKA_SECURITY_PROTOCOL=SASL_SSL,
    FFS_KAFKA_SASL_MECHANISM=SCRAM-SHA-512, FFS_KAFKA_SASL_USERNAME, FFS_KAFKA_SASL_PASSWORD,
    FFS_KAFKA_SSL_CA_LOCATION."""

    bootstrap_servers: str = ""
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: str | None = None
    transactions_topic: str = "ffs.transactions"
    labels_topic: str = "ffs.labels"
    enriched_topic: str = "ffs.enriched"
    dead_letter_topic: str = "ffs.dead-letters"
    partitions: int = 4  # when the project creates a topic; existing topics are kept as they are


@dataclass
class StreamConfig:
    """`ffs stream`: the Spark Structured Streaming job (jobs/stream/job.py)."""

    checkpoint: str = "data/stream/checkpoint"
    starting_offsets: str = "earliest"  # for a new checkpoint: earliest or latest
    allowed_lateness_s: int = 3600  # behind the newest event seen; later goes to dead letters
    max_future_s: int = 300  # event times past wall clock + this are refused
    max_events_per_batch: int = 100_000  # per micro-batch, over all topic partitions
    trigger_ms: int = 0  # 0: next micro-batch as soon as the last one ends
    # the source's kafka.fetch.max.wait.ms: Kafka's 500 ms held the last batch before a lull
    # up to about 2 s (BENCHMARKS.md, "Freshness"); 0 keeps the Java client's default
    fetch_max_wait_ms: int = 50
    metrics_port: int = 9108  # Prometheus /metrics; 0 picks a free port, -1 disables
    # loopback by default; 0.0.0.0 in a pod so Prometheus can scrape it (FFS_STREAM_METRICS_HOST)
    metrics_host: str = "127.0.0.1"
    enrich: bool = True  # publish every transaction with its features to the enriched topic
    # where micro-batches run: "executors" (tasks per Kafka partition, in parallel:
    # jobs/stream/partitioned.py), "driver" (the whole batch in the driver, jobs/stream/
    # batch.py), "auto": executors on a cluster master, the driver on a local one (where the
    # tasks share the driver's cores and each batch's three Spark jobs only add latency),
    # "adaptive": the driver, and tasks for the batch after one of tasks_after_events
    # events or more (a backlog): tasks drain faster, the driver answers sooner
    batches_on: str = "auto"
    tasks_after_events: int = 20_000

    def distributed(self, master: str) -> bool:
        """Whether the job sets up tasks per Kafka partition (for every batch, or for
        adaptive's large ones)."""
        return self.batches_on in ("executors", "adaptive") or (
            self.batches_on == "auto" and not master.startswith("local"))

    def as_tasks(self, previous_events: int) -> bool:
        """Whether a batch runs as tasks, once they are set up, after a batch of
        `previous_events` messages."""
        return self.batches_on != "adaptive" or previous_events >= self.tasks_after_events


@dataclass
class PinotConfig:
    """Apache Pinot, the analysts' real-time OLAP store in production (analytics/pinot_*)."""

    broker_url: str = ""  # e.g. https://pinot-broker:8099 (queries)
    controller_url: str = ""  # e.g. https://pinot-controller:9000 (`ffs pinot apply`)
    token: Secret | None = None  # sent as the Authorization header value when set
    timeout_ms: int = 10_000
    stream_bootstrap_servers: str = ""  # Kafka as Pinot's servers see it; default kafka's


@dataclass
class AnalyticsConfig:
    """Analyst queries and `ffs dashboard` (analytics/)."""

    store: str = "duckdb"  # duckdb: the embedded store fed from the enriched topic; or pinot
    duckdb_path: str = "data/analytics/olap.duckdb"
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8502
    refresh_s: int = 2  # dashboard refresh interval


@dataclass
class FeaturesConfig:
    """The feature repo the product runs (transformations/repo.py)."""

    repo: str = ""  # a Feast repo directory (or its feature_store.yaml); "" = the shipped one
    service: str = ""  # the feature service to serve; "" = the repo's only one


@dataclass(frozen=True)
class IdTypes:
    """The declared type of each id column, as the id model reads it (transformations/ids.py:
    the canonical form and validity rule of each type): the event's transaction_id and each
    entity's join key; a column not named takes `default`."""

    transaction_id: str = "int"
    keys: tuple[tuple[str, str], ...] = ()
    default: str = "int"

    def of(self, column: str) -> str:
        if column == "transaction_id":
            return self.transaction_id
        return dict(self.keys).get(column, self.default)

    def with_keys(self, kinds: dict[str, str]) -> IdTypes:
        """These types with `kinds` for the join keys they do not declare themselves."""
        mine = dict(self.keys)
        return IdTypes(self.transaction_id, tuple(sorted({**kinds, **mine}.items())),
                       self.default)


@dataclass
class IdsConfig:
    """The declared type of each id column, `int` or `string` (transformations/ids.py): one
    canonical form on every path, so "007" is the id 7 when int, its own id when string.
    `transaction_id` is the event's; any other key names an entity's join key (the repo's
    Entity value types declare them too, and the two must agree)."""

    transaction_id: str = "int"
    keys: dict[str, str] = field(default_factory=dict)  # join key -> int | string

    def types(self) -> IdTypes:
        return IdTypes(self.transaction_id, tuple(sorted(self.keys.items())))

    def declared(self) -> dict[str, str]:
        return {"transaction_id": self.transaction_id, **self.keys}


@dataclass
class Config:
    ids: IdsConfig = field(default_factory=IdsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    pinot: PinotConfig = field(default_factory=PinotConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)


_SECRET_KEYS = {"password", "sasl_password", "api_key", "token"}


def _coerce(value: Any, current: Any, name: str) -> Any:
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, found {value!r}")
    if isinstance(current, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, found {value!r}") from None
    return value


def _apply(section: Any, values: dict[str, Any], prefix: str) -> None:
    known = {f.name for f in fields(section)}
    for key, value in values.items():
        if isinstance(section, IdsConfig) and key != "transaction_id":
            section.keys[str(key)] = _id_kind(value, prefix + str(key))
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {prefix}{key}; known: {sorted(known)}")
        current = getattr(section, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key}: expected a mapping")
            _apply(current, value, f"{prefix}{key}.")
            continue
        value = _coerce(value, current, prefix + key) if current is not None else value
        if key in _SECRET_KEYS and value is not None:
            value = Secret(value)
        setattr(section, key, value)


def _id_kind(value: Any, name: str) -> str:
    if value not in ("int", "string"):
        raise ConfigError(f"{name} = {value!r}: must be one of int, string")
    return str(value)


# (setting, lowest, highest) checked once at load: a value out of range is a clear error then,
# not a 500 on every request, a port bound other than the one logged, or a silent no-op
_RANGES = [
    ("serve.port", 1, 65535), ("analytics.dashboard_port", 1, 65535),
    ("stream.metrics_port", -1, 65535),  # 0 picks a free port, -1 disables
    ("redis.timeout_ms", 1, 3_600_000), ("redis.max_connections", 1, 100_000),
    ("serve.timeout_ms", 1, 3_600_000), ("serve.max_batch", 1, 1_000_000),
    ("pinot.timeout_ms", 1, 3_600_000), ("kafka.partitions", 1, 10_000),
    ("spark.shuffle_partitions", 1, 100_000), ("spark.buckets", 1, 100_000),
    ("stream.allowed_lateness_s", 0, 365 * 86400), ("stream.max_future_s", 0, 365 * 86400),
    ("stream.max_events_per_batch", 0, 100_000_000), ("stream.trigger_ms", 0, 86_400_000),
    ("stream.fetch_max_wait_ms", 0, 60_000), ("stream.tasks_after_events", 1, 100_000_000),
    ("analytics.refresh_s", 1, 86400),
]
_CHOICES = [
    ("stream.starting_offsets", ("earliest", "latest")),
    ("stream.batches_on", ("auto", "driver", "executors", "adaptive")),
    ("analytics.store", ("duckdb", "pinot")),
    ("ids.transaction_id", ("int", "string")),
    ("kafka.security_protocol", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
    ("kafka.sasl_mechanism", (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
]


def port(text: str, lowest: int = 1) -> int:
    """argparse type for --port options: the same range as the config's ports."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port ({lowest}-65535)")
    return value


def any_port(text: str) -> int:
    """--port where 0 means "pick a free one"."""
    return port(text, lowest=0)


def check(cfg: Config) -> Config:
    """Every range and choice at once, so one run reports all that is wrong."""
    problems = []
    for name, lo, hi in _RANGES:
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if not lo <= value <= hi:
            problems.append(f"{name} = {value}: must be between {lo} and {hi}")
    for name, allowed in _CHOICES:
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            problems.append(f"{name} = {value!r}: must be one of "
                            f"{', '.join(str(a) for a in allowed if a is not None)}")
    problems += _redis_url_problems(cfg.redis.url, cfg.redis.cluster)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg


def _redis_url_problems(url: str, cluster: bool = False) -> list[str]:
    from urllib.parse import urlparse

    try:
        u = urlparse(url)
        _ = u.port  # parsing the port raises on a non-number or one out of range
    except ValueError as exc:
        return [f"redis.url = {url!r}: {exc}"]
    if u.scheme not in ("redis", "rediss", "unix"):
        return [f"redis.url = {url!r}: the scheme must be redis://, rediss:// (TLS) or unix://"]
    if u.scheme != "unix" and not u.hostname:
        return [f"redis.url = {url!r}: no host (e.g. redis://127.0.0.1:6379/0)"]
    db = u.path.strip("/")
    if cluster and (u.scheme == "unix" or (db and db != "0")):
        return [f"redis.url = {url!r}: a Redis Cluster (redis.cluster: true) is reached over "
                f"TCP and has only database 0"]
    if u.scheme != "unix" and db and not (db.isdigit() and int(db) < 10_000):
        return [f"redis.url = {url!r}: the database after the port must be a number "
                f"(0-15 on a default Redis server; Redis Cluster has only 0)"]
    return []


def _read_yaml(p: Path) -> Any:
    import yaml

    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    if p.is_dir():
        raise ConfigError(f"{p} is a directory; --config / FFS_CONFIG names a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not UTF-8 text: is it the YAML config?") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise ConfigError(f"{p} is not valid YAML{at}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None


def load_config(path: str | os.PathLike[str] | None = None,
                env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    cfg = Config()
    path = path or env.get("FFS_CONFIG") or ("ffs.yaml" if Path("ffs.yaml").exists() else None)
    if path:
        p = Path(path)
        data = _read_yaml(p) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        _apply(cfg, data, "")
    for f in fields(cfg):
        section = getattr(cfg, f.name)
        for sf in fields(section):
            key = f"FFS_{f.name}_{sf.name}".upper()
            if key in env and sf.name != "keys":
                _apply(section, {sf.name: env[key]}, f"{f.name}.")
    for key, value in env.items():  # FFS_IDS_DEVICE_ID=string: a join key's id type
        if key.startswith("FFS_IDS_") and key != "FFS_IDS_TRANSACTION_ID":
            _apply(cfg.ids, {key[len("FFS_IDS_"):].lower(): value}, "ids.")
    return check(cfg)
