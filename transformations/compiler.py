"""A Feast repo's objects compiled to the declarations every engine computes
(transformations/declarations.py), with every problem found reported at once.

What is read from Feast's objects:
- `Entity`: name and join key (one key per entity); its value type is the id type
  (INT64 -> int, STRING -> string), which must agree with the config's `ids` section.
- `KafkaSource` with a JSON message format: the event's columns (`schema_json`), its
  timestamp field, its topic; the transactions source is the one the views aggregate, the
  labels source the one a view names in its `ffs.labels` tag.
- `StreamFeatureView`: one entity, `Aggregation`s (column, function, time_window, name), an
  output schema naming each aggregation with its type, tags `ffs.delay` and `ffs.labels`.
- `OnDemandFeatureView`: the request-time features (its output schema).
- `FeatureService`: the service the product serves.

What each engine can compute is one table, CAPABILITIES; an aggregation outside it is a
problem naming the engines that cannot serve it and what they can.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from ffs.errors import InputError
from transformations.declarations import (
    Agg,
    Entity,
    RecencyFeature,
    RequestFeature,
    WindowFeature,
)
from transformations.request import RequestFunction, RequestFunctionError

ENGINES = ("reference", "numpy", "spark", "redis", "stream")
RECENCY = "seconds_since_previous"

# (function, entity, columns) -> engines that compute it exactly. Columns None: any column
# of the source (count counts rows). The table the README prints.
CAPABILITIES: dict[tuple[str, str], tuple[tuple[str, ...] | None, tuple[str, ...]]] = {
    ("count", "customer"): (None, ENGINES),
    ("count", "terminal"): (None, ENGINES),
    ("sum", "customer"): (("amount",), ENGINES),
    ("mean", "customer"): (("amount",), ENGINES),
    ("min", "customer"): (("amount",), ENGINES),
    ("max", "customer"): (("amount",), ENGINES),
    ("first_seen", "customer"): (("event_timestamp",), ENGINES),
    ("last", "customer"): (("amount",), ENGINES),
    ("count_distinct", "customer"): (("terminal_id",), ENGINES),
    ("fraud_rate", "terminal"): (("is_fraud",), ENGINES),
    (RECENCY, "customer"): (("event_timestamp",), ENGINES),
}
FUNCTIONS = {"count": Agg.COUNT, "sum": Agg.SUM, "mean": Agg.MEAN, "min": Agg.MIN,
             "max": Agg.MAX, "count_distinct": Agg.COUNT_DISTINCT, "fraud_rate": Agg.FRAUD_RATE,
             "first_seen": Agg.FIRST_SEEN, "last": Agg.LAST}
KNOWN_FUNCTIONS = (*FUNCTIONS, RECENCY, "std")
ID_TYPES = {"INT64": "int", "STRING": "string"}
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
    views: dict[str, str]  # feature view -> entity (the Feast plugin reads by view)
    topics: dict[str, str] = field(default_factory=dict)  # source -> Kafka topic
    functions: list[RequestFunction] = field(default_factory=list)  # request features' code

    def to_json(self) -> str:
        def enc(o: Any) -> Any:
            if isinstance(o, timedelta):
                return {"seconds": int(o.total_seconds())}
            raise TypeError(type(o).__name__)

        return json.dumps({"service": self.service,
                           "windows": [asdict(w) for w in self.windows],
                           "recency": [asdict(r) for r in self.recency],
                           "request": [asdict(r) for r in self.request],
                           "id_types": self.id_types, "views": self.views,
                           "topics": self.topics,
                           "functions": [f.to_dict() for f in self.functions]},
                          default=enc, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Compiled:
        d = json.loads(text)

        def span(v: dict) -> timedelta:
            return timedelta(seconds=v["seconds"])

        windows = [WindowFeature(w["name"], Entity(w["entity"]), Agg(w["agg"]),
                                 span(w["window"]), w["column"], span(w["delay"]),
                                 w["description"]) for w in d["windows"]]
        recency = [RecencyFeature(r["name"], Entity(r["entity"]), span(r["horizon"]),
                                  r["description"], r["dtype"]) for r in d["recency"]]
        request = [RequestFeature(r["name"], r["dtype"], r["description"]) for r in d["request"]]
        return cls(d["service"], windows, recency, request, d["id_types"], d["views"],
                   d.get("topics", {}),
                   [RequestFunction.from_dict(f) for f in d.get("functions", [])])


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

    entities: dict[str, Entity] = {}
    keys: dict[str, str] = {}
    for e in contents.entities:
        if e.name == "__dummy":  # Feast's own placeholder for views without entities
            continue
        where = f"Entity {e.name}"
        try:
            entities[e.name] = Entity(e.name)
        except ValueError:
            problems.append(Problem(where, f"the engines serve the entities "
                                           f"{[x.value for x in Entity]} today",
                                    "rename it to one of them, or wait for any-entity "
                                    "support (the feature-repo issue)"))
            continue
        if [e.join_key] != [Entity(e.name).key]:
            problems.append(Problem(where, f"join key {e.join_key!r}; the engines key "
                                           f"{e.name} by {Entity(e.name).key!r}",
                                    f"join_keys=[{Entity(e.name).key!r}]"))
        kind = ID_TYPES.get(getattr(e.value_type, "name", str(e.value_type)))
        key = Entity(e.name).key
        if kind is None:
            problems.append(Problem(where, f"value type {e.value_type} is not an id type",
                                    "ValueType.INT64 or ValueType.STRING"))
        else:
            keys[key] = kind
            declared = (id_types or {}).get(key)
            if declared is not None and declared != kind:
                problems.append(Problem(where, f"ids are {kind} here but the config declares "
                                               f"ids.{key}: {declared}",
                                        f"set ids.{key}: {kind} in the config, or the "
                                        f"value type to match"))

    # the service's order is the column order of every engine's output
    services = {s.name: s for s in contents.feature_services}
    chosen = services.get(service) if service else (
        next(iter(services.values())) if len(services) == 1 else None)
    order = [p.name for p in chosen.feature_view_projections] if chosen is not None else []

    def position(view) -> int:
        return order.index(view.name) if view.name in order else len(order)

    sources = {s.name: s for s in contents.data_sources}
    topics = {name: s.kafka_options.topic for name, s in sources.items()
              if getattr(s, "kafka_options", None) is not None}
    windows: list[WindowFeature] = []
    recency: list[RecencyFeature] = []
    views: dict[str, str] = {}
    for v in sorted(contents.stream_feature_views, key=position):
        where = f"StreamFeatureView {v.name}"
        ents = list(v.entities)
        if len(ents) != 1 or ents[0] not in entities:
            problems.append(Problem(where, f"entities {ents}: a view aggregates one declared "
                                           f"entity", "entities=[<one Entity of the repo>]"))
            continue
        entity = entities[ents[0]]
        views[v.name] = entity.value
        source = v.stream_source or v.batch_source
        cols = source_columns(source) if source is not None else None
        if cols is None:
            problems.append(Problem(where, "its source has no column schema",
                                    "a KafkaSource with message_format=JsonFormat("
                                    "schema_json=...)"))
            cols = {}
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
            cap = CAPABILITIES.get((fn, entity.value))
            if cap is None:
                can = sorted(f for f, e in CAPABILITIES if e == entity.value)
                problems.append(Problem(aw, f"{fn} on {entity.value} is not computed by "
                                            f"{', '.join(ENGINES)}",
                                        f"for {entity.value} the engines compute "
                                        f"{', '.join(can)} today"))
                continue
            allowed, _engines = cap
            known = {**cols, **label_cols}
            if a.column and a.column not in known:
                problems.append(Problem(aw, f"column {a.column!r} is not in the source's "
                                            f"schema {sorted(known)}",
                                        "name a column of the source (or of the ffs.labels "
                                        "source for fraud_rate)"))
                continue
            if allowed is not None and a.column not in allowed:
                problems.append(Problem(aw, f"{fn} over {a.column!r} is not computed by the "
                                            f"engines", f"{fn} over {', '.join(allowed)}"))
                continue
            if fn == "fraud_rate" and not label_cols:
                problems.append(Problem(aw, "fraud_rate counts labels, and the view names no "
                                            "label source", 'tags={"ffs.labels": "<source>"}'))
                continue
            if a.time_window is None or a.time_window <= timedelta(0):
                problems.append(Problem(aw, "no time window", "time_window=timedelta(...)"))
                continue
            want = "float64" if fn in ("sum", "mean", "min", "max", "fraud_rate", RECENCY,
                                       "first_seen", "last") else "int64"
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
                    problems.append(Problem(aw, "seconds_since_previous has no delay",
                                            "move it to a view without ffs.delay"))
                recency.append(RecencyFeature(a.name, entity, a.time_window,
                                              about.get(a.name, v.description or "")))
            else:
                if fn in ("first_seen", "last") and delay:
                    problems.append(Problem(aw, f"{fn} has no delay",
                                            "move it to a view without ffs.delay"))
                windows.append(WindowFeature(a.name, entity, FUNCTIONS[fn], a.time_window,
                                             None if fn == "count" else a.column, delay,
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
        customer_side = {w.name for w in windows if w.entity == Entity.CUSTOMER} | {
            r.name for r in recency if r.entity == Entity.CUSTOMER}
        other = [n for n in reads if n in known_features and n not in customer_side]
        if other:
            problems.append(Problem(where, f"reads {other}: the Spark engine runs request "
                                    "functions beside the customer windows, so they read "
                                    "customer features today", "read customer features"))
        fields = tuple(f.name for s in od.source_request_sources.values() for f in s.schema)
        fn = _request_function(od, fields, tuple(reads), tuple(outputs), where, problems)
        if fn is not None:
            functions.append(fn)

    if chosen is None:
        problems.append(Problem(f"FeatureService {service or ''}".strip(),
                                f"the repo declares {sorted(services) or 'none'}; the product "
                                f"serves one", "declare one, or name it (--service)"))
    else:
        missing = [n for n in order if n not in views]
        if missing:
            problems.append(Problem(f"FeatureService {chosen.name}", f"serves {missing}, not "
                                    f"views of the repo", "list the repo's views"))
    service = chosen.name if chosen is not None else ""
    if problems:
        raise RepoError(problems)
    return Compiled(service, windows, recency, request, keys, views, topics, functions)


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
