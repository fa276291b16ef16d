"""A Feast repo's objects compiled to the declarations every engine computes
(transformations/declarations.py), with every problem found reported at once.

What is read from Feast's objects:
- `Entity`: name and join key (one key per entity); its value type is the id type
  (INT64 -> int, STRING -> string), which must agree with the config's `ids` section.
- `KafkaSource` with a JSON message format: the event's columns (`schema_json`), its
  timestamp field, its topic; the transactions source is the one the views aggregate, the
  labels source the one a view names in its `ffs.labels` tag.
- `StreamFeatureView`: one entity, `Aggregation`s (column, function, time_window, name), an
  output schema naming each aggregation with its type, tags `ffs.delay` and `ffs.labels`;
  its `udf` (python mode) derives event columns the aggregations may read (`derived`).
- a source's tag `ffs.optional`: its columns that may be null or absent (read by `last`).
- `OnDemandFeatureView`: the request-time features (its output schema).
- `FeatureService`: the service the product serves.

What each engine can compute is one table, CAPABILITIES; an aggregation outside it is a
problem naming the engines that cannot serve it and what they can.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ffs.errors import InputError
from ffs.transformations.declarations import (
    Agg,
    Entity,
    RecencyFeature,
    RequestFeature,
    WindowFeature,
)
from ffs.transformations.request import RequestFunction, RequestFunctionError

ENGINES = ("reference", "numpy", "spark", "redis", "stream")
RECENCY = "seconds_since_previous"

# Column kinds: what a function reads of the event. "row": nothing (count counts events);
# "number": a numeric column of the source; "value": any column (its distinct values);
# "time": the event's timestamp; "label": a 0/1 column of the view's label source.
NUMERIC_TYPES = ("double", "float", "bigint", "int", "integer", "long", "decimal")
# function -> (column kind, engines that compute it exactly, for any entity, window and
# delay). The table the README prints.
CAPABILITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "count": ("row", ENGINES),
    "sum": ("number", ENGINES),
    "mean": ("number", ENGINES),
    "min": ("number", ENGINES),
    "max": ("number", ENGINES),
    "std": ("number", ENGINES),
    "last": ("number", ENGINES),
    "count_distinct": ("value", ENGINES),
    "first_seen": ("time", ENGINES),
    RECENCY: ("time", ENGINES),
    "fraud_rate": ("label", ENGINES),
}
FUNCTIONS = {"count": Agg.COUNT, "sum": Agg.SUM, "mean": Agg.MEAN, "min": Agg.MIN,
             "max": Agg.MAX, "std": Agg.STD, "count_distinct": Agg.COUNT_DISTINCT,
             "fraud_rate": Agg.FRAUD_RATE, "first_seen": Agg.FIRST_SEEN, "last": Agg.LAST}
KNOWN_FUNCTIONS = (*FUNCTIONS, RECENCY)
ID_TYPES = {"INT64": "int", "STRING": "string"}
# The event contract every source of the repo follows (README, "Bring your own repo"): the
# engines key events by these columns whatever else the source carries.
EVENT_ID, EVENT_TIME = "transaction_id", "event_timestamp"
LABEL_COLUMNS = ("transaction_id", "is_fraud", "label_timestamp")
_SAMPLE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)  # the made-up event udfs are tried on
_SPAN = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Problem:
    obj: str  # e.g. "StreamFeatureView <view>, aggregation <name>"
    reason: str
    fix: str

    def line(self) -> str:
        return f"{self.obj}: {self.reason}; fix: {self.fix}"


class RepoError(InputError):
    """A repo that cannot be compiled: every problem, each with its object and fix."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the feature repo:\n"
                         + "\n".join(f"  - {p.line()}" for p in problems))


@dataclass
class Compiled:
    """The declarations of one repo, as the engines read them (JSON round-trips)."""

    service: str
    windows: list[WindowFeature]
    recency: list[RecencyFeature]
    request: list[RequestFeature]
    id_types: dict[str, str]  # join key -> int | string
    views: dict[str, str]  # feature view -> entity name (the Feast plugin reads by view)
    topics: dict[str, str] = field(default_factory=dict)  # source -> Kafka topic
    functions: list[RequestFunction] = field(default_factory=list)  # request features' code
    entities: list[Entity] = field(default_factory=list)  # in the service's order
    # the event columns the windows read beyond the keys: column -> "number" | "text"
    values: dict[str, str] = field(default_factory=dict)
    # value columns that may be null (the source's ffs.optional tag): only `last` reads them
    optional: list[str] = field(default_factory=list)
    # the views' udfs: event columns derived from the others (outputs), run on every path
    derived: list[RequestFunction] = field(default_factory=list)
    # every feature service of the repo -> its features, in the engines' column order (the
    # served one has them all; others, e.g. a baseline, are subsets for training and serving)
    services: dict[str, list[str]] = field(default_factory=dict)

    def service_features(self, name: str) -> list[str]:
        """The features of one of the repo's services; KeyError naming the ones it has."""
        if name not in self.services:
            raise KeyError(f"the feature repo declares no feature service {name!r} "
                           f"(it has {sorted(self.services)})")
        return list(self.services[name])

    @property
    def derived_columns(self) -> tuple[str, ...]:
        return tuple(name for fn in self.derived for name, _ in fn.outputs)

    @property
    def input_values(self) -> dict[str, str]:
        """The value columns an event arrives with (the derived ones are computed)."""
        derived = set(self.derived_columns)
        return {c: k for c, k in self.values.items() if c not in derived}

    def entity(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)

    def to_json(self) -> str:
        def enc(o: Any) -> Any:
            if isinstance(o, timedelta):
                return {"seconds": int(o.total_seconds())}
            raise TypeError(type(o).__name__)

        def named(feature) -> dict:
            d = asdict(feature)
            d["entity"] = feature.entity.name
            return d

        return json.dumps({"service": self.service,
                           "windows": [named(w) for w in self.windows],
                           "recency": [named(r) for r in self.recency],
                           "request": [asdict(r) for r in self.request],
                           "id_types": self.id_types, "views": self.views,
                           "topics": self.topics,
                           "functions": [f.to_dict() for f in self.functions],
                           "entities": [{"name": e.name, "keys": list(e.keys)}
                                        for e in self.entities],
                           # pairs: sort_keys would reorder a mapping, and the order is the
                           # column order of messages and tables
                           "values": list(self.values.items()),
                           "optional": self.optional,
                           "derived": [f.to_dict() for f in self.derived],
                           "services": self.services},
                          default=enc, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Compiled:
        d = json.loads(text)

        def span(v: dict) -> timedelta:
            return timedelta(seconds=v["seconds"])

        entities = {e["name"]: Entity(e["name"], tuple(e["keys"])) for e in d["entities"]}
        windows = [WindowFeature(w["name"], entities[w["entity"]], Agg(w["agg"]),
                                 span(w["window"]), w["column"], span(w["delay"]),
                                 w["description"]) for w in d["windows"]]
        recency = [RecencyFeature(r["name"], entities[r["entity"]], span(r["horizon"]),
                                  r["description"], r["dtype"]) for r in d["recency"]]
        request = [RequestFeature(r["name"], r["dtype"], r["description"]) for r in d["request"]]
        return cls(d["service"], windows, recency, request, d["id_types"], d["views"],
                   d.get("topics", {}),
                   [RequestFunction.from_dict(f) for f in d.get("functions", [])],
                   list(entities.values()), dict(d.get("values", [])),
                   list(d.get("optional", [])),
                   [RequestFunction.from_dict(f) for f in d.get("derived", [])],
                   d.get("services", {}))


def parse_span(text: str) -> timedelta:
    """"7d", "30m", "1h30m" -> timedelta; ValueError otherwise."""
    parts = _SPAN.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a span like 7d, 12h, 30m")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def source_columns(source) -> dict[str, str] | None:
    """A Kafka source's JSON schema as {column: type}, or None when it has none."""
    fmt = getattr(source, "kafka_options", None)
    fmt = getattr(fmt, "message_format", None)
    text = getattr(fmt, "schema_json", None)
    if not text:
        return None
    out = {}
    for part in text.split(","):
        bits = part.split()
        if len(bits) >= 2:
            out[bits[0]] = bits[1].lower()
    return out


def compile_objects(contents, id_types: dict[str, str] | None = None,
                    service: str | None = None) -> Compiled:
    """contents: a Feast RepoContents (feast.repo_operations.parse_repo) or anything with
    the same lists. id_types: the config's declared id types by join key. Raises RepoError
    with every problem found."""
    problems: list[Problem] = []
    names: dict[str, str] = {}  # feature name -> where it was declared

    def clash(name: str, where: str) -> None:
        if name in names:
            problems.append(Problem(where, f"feature name {name!r} is also declared by "
                                           f"{names[name]}", "give each feature its own name"))
        names[name] = where

    join_keys: dict[str, str] = {}  # Feast entity -> its join key
    keys: dict[str, str] = {}  # join key -> int | string
    for e in contents.entities:
        if e.name == "__dummy":  # Feast's own placeholder for views without entities
            continue
        where = f"Entity {e.name}"
        kind = ID_TYPES.get(getattr(e.value_type, "name", str(e.value_type)))
        if kind is None:
            problems.append(Problem(where, f"value type {e.value_type} is not an id type",
                                    "ValueType.INT64 or ValueType.STRING"))
            continue
        if e.join_key in (EVENT_ID, EVENT_TIME):
            problems.append(Problem(where, f"join key {e.join_key!r} is the event's own "
                                           f"{'id' if e.join_key == EVENT_ID else 'time'}",
                                    "key the entity by a column of its own"))
            continue
        if keys.get(e.join_key, kind) != kind:
            problems.append(Problem(where, f"join key {e.join_key!r} is also an entity key "
                                           f"of type {keys[e.join_key]}", "use one type"))
        join_keys[e.name], keys[e.join_key] = e.join_key, kind
        declared = (id_types or {}).get(e.join_key)
        if declared is not None and declared != kind:
            problems.append(Problem(where, f"ids are {kind} here but the config declares "
                                           f"ids.{e.join_key}: {declared}",
                                    f"set ids.{e.join_key}: {kind} in the config, or the "
                                    f"value type to match"))

    # the service's order is the column order of every engine's output
    services = {s.name: s for s in contents.feature_services}
    chosen = services.get(service) if service else _default_service(contents, services)
    order = [p.name for p in chosen.feature_view_projections] if chosen is not None else []

    def position(view) -> int:
        return order.index(view.name) if view.name in order else len(order)

    sources = {s.name: s for s in contents.data_sources}
    topics = {name: s.kafka_options.topic for name, s in sources.items()
              if getattr(s, "kafka_options", None) is not None}
    windows: list[WindowFeature] = []
    recency: list[RecencyFeature] = []
    views: dict[str, str] = {}
    entities: dict[str, Entity] = {}
    values: dict[str, str] = {}
    event_source: str | None = None
    derived = _derived_columns(contents.stream_feature_views, join_keys, problems)
    derived_types = {name: "double" for fn in derived for name, _ in fn.outputs}
    optional: set[str] = set()
    optional_of: dict[str, set[str]] = {}
    for v in sorted(contents.stream_feature_views, key=position):
        where = f"StreamFeatureView {v.name}"
        ents = list(v.entities)
        unknown = [e for e in ents if e not in join_keys]
        if not ents or unknown:
            problems.append(Problem(where, f"entities {ents}: a view aggregates by entities "
                                           f"the repo declares ({sorted(join_keys)})",
                                    "entities=[<Entity>, ...] (several: a composite key)"))
            continue
        entity = Entity("+".join(ents), tuple(join_keys[e] for e in ents))
        if len(set(entity.keys)) < len(entity.keys):
            problems.append(Problem(where, f"entities {ents} repeat a join key",
                                    "name each entity once"))
            continue
        entity = entities.setdefault(entity.name, entity)
        views[v.name] = entity.name
        source = v.stream_source or v.batch_source
        cols = source_columns(source) if source is not None else None
        if cols is None:
            problems.append(Problem(where, "its source has no column schema",
                                    "a KafkaSource with message_format=JsonFormat("
                                    "schema_json=...)"))
            cols = {}
        else:
            name = getattr(source, "name", "")
            if name not in optional_of:  # once per source, however many views read it
                optional_of[name] = _optional(source, cols, problems)
            optional |= optional_of[name]
            cols = {**cols, **derived_types}
            if event_source is None:
                event_source = name
                missing = [c for c in (EVENT_ID, EVENT_TIME) if c not in cols]
                if missing:
                    problems.append(Problem(f"{where}, source {name}", f"its schema lacks "
                                            f"{missing}, which every event carries",
                                            f"add {', '.join(missing)} to schema_json"))
            elif name != event_source:
                problems.append(Problem(where, f"source {name!r}: the views of a repo "
                                        f"aggregate one event source today ({event_source!r})",
                                        f"source={event_source}"))
            lacking = [k for k in entity.keys if k not in cols]
            if lacking:
                problems.append(Problem(where, f"its source's schema lacks the join keys "
                                        f"{lacking}", f"add {', '.join(lacking)} to "
                                        "schema_json"))
        tags = dict(v.tags or {})
        delay = timedelta(0)
        if "ffs.delay" in tags:
            try:
                delay = parse_span(tags["ffs.delay"])
            except ValueError as exc:
                problems.append(Problem(where, f"tag ffs.delay: {exc}",
                                        'tags={"ffs.delay": "7d"}'))
        label_cols: dict[str, str] = {}
        if "ffs.labels" in tags:
            lab = sources.get(tags["ffs.labels"])
            if lab is None:
                problems.append(Problem(where, f"tag ffs.labels names {tags['ffs.labels']!r}, "
                                               f"not a source of the repo",
                                        f"one of {sorted(sources)}"))
            else:
                label_cols = source_columns(lab) or {}
                missing = [c for c in LABEL_COLUMNS if c not in label_cols]
                if missing:
                    problems.append(Problem(f"{where}, labels {lab.name}", f"its schema "
                                            f"lacks {missing}, which every label carries",
                                            f"add {', '.join(missing)} to schema_json"))
        out_types = {f.name: _dtype(f.dtype) for f in v.schema}
        about = {f.name: f.description for f in v.schema if f.description}
        for a in v.aggregations:
            aw = f"{where}, aggregation {a.name or '(unnamed)'}"
            if not a.name:
                problems.append(Problem(aw, "no output name", "Aggregation(name=...)"))
                continue
            clash(a.name, aw)
            fn = a.function
            if fn not in KNOWN_FUNCTIONS:
                problems.append(Problem(aw, f"unknown function {fn!r}",
                                        f"one of {', '.join(KNOWN_FUNCTIONS)}"))
                continue
            kind, _engines = CAPABILITIES[fn]
            column = a.column
            if kind == "label":
                if not label_cols:
                    problems.append(Problem(aw, "fraud_rate counts labels, and the view names "
                                                "no label source",
                                            'tags={"ffs.labels": "<source>"}'))
                    continue
                if column != "is_fraud":
                    problems.append(Problem(aw, f"fraud_rate reads the label's 'is_fraud', "
                                                f"not {column!r}", 'column="is_fraud"'))
                    continue
            elif kind == "time":
                if column not in (None, EVENT_TIME):
                    problems.append(Problem(aw, f"{fn} reads the event's time, not "
                                                f"{column!r}", f'column="{EVENT_TIME}"'))
                    continue
            elif kind in ("number", "value"):
                if column not in cols:
                    problems.append(Problem(aw, f"column {column!r} is not in the source's "
                                                f"schema {sorted(cols)}",
                                            "name a column of the source"))
                    continue
                if column in (EVENT_ID, EVENT_TIME):
                    problems.append(Problem(aw, f"{fn} of the event's "
                                                f"{'id' if column == EVENT_ID else 'time'}",
                                            "aggregate a column of the event"))
                    continue
                if kind == "number" and cols[column] not in NUMERIC_TYPES:
                    problems.append(Problem(aw, f"{fn} needs a number; {column!r} is "
                                                f"{cols[column]}",
                                            f"a column of type {' or '.join(NUMERIC_TYPES[:3])}"))
                    continue
                if column in optional and fn != "last":
                    problems.append(Problem(aw, f"{column!r} is optional (may be null), and "
                                                f"{fn} needs a value on every event",
                                            "last (null when the latest event has none), "
                                            "or drop it from ffs.optional"))
                    continue
                if column not in keys:
                    kind_of = "number" if cols[column] in NUMERIC_TYPES else "text"
                    values[column] = "number" if values.get(column) == "number" else kind_of
            if a.time_window is None or a.time_window <= timedelta(0):
                problems.append(Problem(aw, "no time window", "time_window=timedelta(...)"))
                continue
            want = "int64" if fn in ("count", "count_distinct") else "float64"
            got = out_types.get(a.name)
            if got != want:
                problems.append(Problem(aw, f"the view's schema gives it type {got}; the "
                                            f"engines compute {want}",
                                        f"Field(name={a.name!r}, dtype="
                                        f"{'Int64' if want == 'int64' else 'Float64'})"))
            ttl = v.ttl or timedelta(0)
            if ttl and ttl < a.time_window + delay:
                problems.append(Problem(aw, f"the view's ttl {ttl} is shorter than its window "
                                            f"plus delay ({a.time_window + delay})",
                                        f"ttl >= {a.time_window + delay}"))
            if fn == RECENCY:
                if delay:
                    problems.append(Problem(aw, "seconds_since_previous is measured from t, "
                                                "so it has no delay",
                                            "move it to a view without ffs.delay"))
                recency.append(RecencyFeature(a.name, entity, a.time_window,
                                              about.get(a.name, v.description or "")))
            else:
                windows.append(WindowFeature(a.name, entity, FUNCTIONS[fn], a.time_window,
                                             None if fn == "count" else
                                             (column or EVENT_TIME), delay,
                                             about.get(a.name, v.description or "")))

    request: list[RequestFeature] = []
    functions: list[RequestFunction] = []
    known_features = {w.name for w in windows} | {r.name for r in recency}
    for od in sorted(contents.on_demand_feature_views, key=position):
        where = f"OnDemandFeatureView {od.name}"
        views[od.name] = "request"
        outputs = []
        for f in od.features:
            clash(f.name, where)
            dtype = _dtype(f.dtype)
            if dtype not in ("int64", "float64"):
                problems.append(Problem(f"{where}, feature {f.name}", f"type {f.dtype}: the "
                                        "engines serve numbers", "Int64 or Float64"))
                dtype = "float64"
            outputs.append((f.name, dtype))
            request.append(RequestFeature(f.name, dtype,
                                          f.description or od.description or ""))
        reads = [f.name for p in od.source_feature_view_projections.values() for f in p.features]
        unknown = [n for n in reads if n not in known_features]
        if unknown:
            problems.append(Problem(where, f"reads {unknown}, which no stream view of the repo "
                                    "declares", "read features of the repo's views"))
        fields = tuple(f.name for s in od.source_request_sources.values() for f in s.schema)
        fn = _request_function(od, fields, tuple(reads), tuple(outputs), where, problems)
        if fn is not None:
            functions.append(fn)

    if chosen is None:
        problems.append(Problem(f"FeatureService {service or ''}".strip(),
                                f"the repo declares {sorted(services) or 'none'}; the product "
                                f"serves one", "declare one, one that serves every view, or "
                                "name it (features.service)"))
    else:
        missing = [n for n in order if n not in views]
        if missing:
            problems.append(Problem(f"FeatureService {chosen.name}", f"serves {missing}, not "
                                    f"views of the repo", "list the repo's views"))
    service = chosen.name if chosen is not None else ""
    if problems:
        raise RepoError(problems)
    used = {k for e in entities.values() for k in e.keys}
    derived = [_kept_inputs(fn, sources.get(event_source or ""), used, values, problems)
               for fn in derived]
    # every derived column is computed, read or not, so its function runs as declared
    values.update((name, "number") for fn in derived for name, _ in fn.outputs
                  if name not in values)
    every = [f.name for f in request] + [w.name for w in windows] + [r.name for r in recency]
    # a projection may select some of a view's features (Feast's view[["a", "b"]])
    served = {name: [n for n in every if n in {f.name for p in s.feature_view_projections
                                                for f in p.features}]
              for name, s in services.items()}
    return Compiled(service, windows, recency, request,
                    {k: kind for k, kind in keys.items() if k in used}, views, topics,
                    functions, list(entities.values()), values,
                    sorted(c for c in optional if c in values), derived, served)


def _optional(source, cols: dict[str, str], problems: list[Problem]) -> set[str]:
    """The source's `ffs.optional` tag: columns that may be null or absent (coordinates a
    feed does not always carry). Only numbers: a null text id would name no value."""
    text = dict(getattr(source, "tags", None) or {}).get("ffs.optional", "")
    out = set()
    for column in (c.strip() for c in text.split(",") if c.strip()):
        where = f"{type(source).__name__} {source.name}, tag ffs.optional"
        if column not in cols:
            problems.append(Problem(where, f"{column!r} is not in its schema {sorted(cols)}",
                                    "name columns of the source's schema_json"))
        elif column in (EVENT_ID, EVENT_TIME) or cols[column] not in NUMERIC_TYPES:
            problems.append(Problem(where, f"{column!r} ({cols[column]}) cannot be optional: "
                                           "only number columns may be null",
                                    "leave it out of ffs.optional"))
        else:
            out.add(column)
    return out


def _default_service(contents, services: dict):
    """Without a configured service: the repo's only one, or the one serving every view
    (the others are subsets, e.g. a baseline to compare with); None when that is ambiguous."""
    if len(services) == 1:
        return next(iter(services.values()))
    views = {v.name for v in (*contents.stream_feature_views,
                              *contents.on_demand_feature_views)}
    whole = [s for s in services.values()
             if views <= {p.name for p in s.feature_view_projections}]
    return whole[0] if len(whole) == 1 else None


class _Reads(dict):
    """A udf's input that records which columns the udf reads."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    # a udf that walks the dict reads every column
    def __iter__(self):
        self.read.update(super().keys())
        return super().__iter__()

    def items(self):
        self.read.update(super().keys())
        return super().items()

    def values(self):
        self.read.update(super().keys())
        return super().values()

    def keys(self):
        self.read.update(super().keys())
        return super().keys()

    def copy(self):
        self.read.update(super().keys())
        return dict(self)


def _kept_inputs(fn: RequestFunction, source, keys: set[str], values: dict[str, str],
                 problems: list[Problem]) -> RequestFunction:
    """The udf with the event columns it reads as inputs, found by running it: the stream
    keeps only the keys and the value columns, so a source column the udf reads becomes a
    value column (carried by every path) rather than a None on one path and a value on
    another."""
    cols = (source_columns(source) if source is not None else None) or {}
    derived = {name for name, _ in fn.outputs}
    while True:
        kept = [c for c in cols if c in keys or c in values or c == EVENT_TIME]
        sample = _Reads({c: [1.0 if cols[c] in NUMERIC_TYPES else "1"]
                         for c in kept if c != EVENT_TIME})
        sample[EVENT_TIME] = [_SAMPLE_TIME]
        try:
            fn.callable()(sample)
            # its inputs are the columns it read: every path then hands it only those (a
            # backfill builds 1.75 M datetimes for a udf of the time, not lists of every id)
            read = tuple(c for c in kept if c in sample.read)
            return RequestFunction(fn.view, fn.function, fn.source, read, (), fn.outputs)
        except KeyError as exc:
            column = exc.args[0] if exc.args else None
            if column not in cols or column in kept or column in derived:
                problems.append(Problem(f"StreamFeatureView {fn.view}, udf", f"it reads "
                                        f"{column!r}, not a column of its source",
                                        "read the source's columns"))
                return fn
            values[column] = "number" if cols[column] in NUMERIC_TYPES else "text"
        except Exception as exc:  # it ran on the view's columns in _derived_columns
            problems.append(Problem(f"StreamFeatureView {fn.view}, udf", f"it fails on the "
                                    f"kept columns: {exc}", "read the source's columns"))
            return fn


def _derived_columns(views, join_keys: dict[str, str],
                     problems: list[Problem]) -> list[RequestFunction]:
    """The views' udfs: python-mode functions of the event's columns (lists; event_timestamp
    as UTC datetimes) returning new columns, numbers on every event. Each is tried on one
    made-up event, so a function that cannot run on its own is refused here, not mid-stream."""
    out: list[RequestFunction] = []
    seen: dict[str, str] = {}
    for v in views:
        t = getattr(v, "feature_transformation", None)
        source = getattr(t, "udf_string", "") or ""
        if t is None or not source:
            continue
        where = f"StreamFeatureView {v.name}, udf"
        mode = getattr(t, "mode", None)
        if str(getattr(mode, "value", mode)) != "python":
            problems.append(Problem(where, f"mode {mode}: the engines run python-mode udfs",
                                    'mode="python" (a function of a dict of event columns)'))
            continue
        cols = source_columns(v.stream_source or v.batch_source) or {}
        inputs = tuple(c for c in cols if c != EVENT_ID)
        sample = {c: [1.0 if cols[c] in NUMERIC_TYPES else "1"] for c in inputs
                  if c != EVENT_TIME}
        try:
            probe = RequestFunction.from_source(v.name, source, request_inputs=inputs,
                                                feature_inputs=(), outputs=())
            got = probe.callable()({**sample, EVENT_TIME: [_SAMPLE_TIME]})
            if not isinstance(got, dict):
                raise RequestFunctionError(f"it returned {type(got).__name__}, not a dict")
        except Exception as exc:  # the repo's own code: whatever it raises is the reason
            problems.append(Problem(where, f"it does not run on one event: "
                                           f"{type(exc).__name__}: {exc}",
                                    "a python-mode function of a dict of the source's columns "
                                    "that imports what it uses inside its body"))
            continue
        new = [c for c in got if c not in cols]
        for c in new:
            if c in seen or c in join_keys.values():
                problems.append(Problem(where, f"column {c!r} is also derived by "
                                               f"{seen.get(c, 'an entity key')}",
                                        "derive each column once"))
            seen[c] = v.name
        if new:
            out.append(RequestFunction(probe.view, probe.function, probe.source, inputs, (),
                                       tuple((c, "float64") for c in new)))
    return out


def _request_function(od, fields, reads, outputs, where: str,
                      problems: list[Problem]) -> RequestFunction | None:
    """The view's function from its source, tried on one made-up row: the engines run that
    source (no Feast, no repo globals), so it must stand alone and fill its schema."""
    t = getattr(od, "feature_transformation", None)
    source = getattr(t, "udf_string", "") or ""
    mode = getattr(t, "mode", None)
    if mode is not None and str(getattr(mode, "value", mode)) != "python":
        problems.append(Problem(where, f"mode {mode}: the engines run python-mode functions",
                                'mode="python" (a function of a dict of lists)'))
        return None
    try:
        fn = RequestFunction.from_source(od.name, source, request_inputs=fields,
                                         feature_inputs=reads, outputs=outputs)
        fn.apply([0], {f: [1.0] for f in fields}, {f: [1.0] for f in reads})
    except (RequestFunctionError, SyntaxError, NameError, KeyError) as exc:
        problems.append(Problem(where, f"its function does not run on its own: {exc}",
                                "a python-mode function of its inputs that imports what it "
                                "uses inside its body and returns every schema field"))
        return None
    return fn


def _dtype(feast_type) -> str | None:
    name = getattr(feast_type, "name", str(feast_type)).upper()
    return {"INT64": "int64", "FLOAT64": "float64", "INT32": "int32",
            "FLOAT32": "float32", "STRING": "string", "BOOL": "bool"}.get(name)
