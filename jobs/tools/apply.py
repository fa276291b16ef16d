"""`ffs apply`: load a feature repo, compile it for every engine, check everything before
writing anything, then register it in Feast's registry.

1. Feast collects the repo's objects as `feast apply` does (transformations/repo.parse).
2. The compiler turns them into the engines' declarations, or reports every problem at once
   (transformations/compiler.py: object, reason, fix).
3. Each engine compiles its part from those declarations, and any refusal is a problem too:
   the Redis read plan (online/plan.py, which the stream writer shares), the Kafka message
   schemas (the sources' columns against what the bus parses), the Great Expectations suites,
   the Pinot and DuckDB tables.
4. Only then: the compiled declarations are cached for every process
   (transformations/repo.py), and the objects are registered in the registry the repo's
   feature_store.yaml names (a file locally, Feast's SQL registry on PostgreSQL for teams),
   so the `feast` CLI and UI list them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ffs.config import Config
from ffs.transformations import repo as R
from ffs.transformations.compiler import (
    EVENT_ID,
    EVENT_TIME,
    LABEL_COLUMNS,
    Compiled,
    Problem,
    RepoError,
)


def bus_fields(compiled: Compiled) -> dict[str, tuple[str, ...]]:
    """What the bus parses from each message (bus/messages.py): the event contract, the keys
    and value columns of this repo; labels when a view counts them."""
    keys = tuple(dict.fromkeys(k for e in compiled.entities for k in e.keys))
    out = {"transactions": (EVENT_ID, EVENT_TIME, *keys, *compiled.input_values)}
    if any(w.agg.value == "fraud_rate" for w in compiled.windows):
        out["labels"] = LABEL_COLUMNS
    return out


@dataclass
class ApplySummary:
    repo: Path
    compiled: Compiled
    engines: dict[str, str]  # engine -> what it compiled
    registry: str
    seconds: float


def _engine_checks(compiled: Compiled, contents) -> tuple[dict[str, str], list[Problem]]:
    """Every engine's own compilation of the declarations; refusals become problems."""
    from ffs.online.plan import compile_plans

    done: dict[str, str] = {}
    problems: list[Problem] = []
    n = len(compiled.windows) + len(compiled.recency) + len(compiled.request)
    done["numpy, spark"] = (f"{len(compiled.windows)} windows, {len(compiled.recency)} "
                            f"recency over {len(compiled.entities)} entities")
    plans = compile_plans()
    done["redis read plan, stream writer"] = ", ".join(
        f"{p.entity.name}: {p.width} values per row, {p.fmt.fixed_size} + text bytes per "
        f"event" for p in plans)
    sources = {s.name: s for s in contents.data_sources}
    from ffs.transformations.compiler import source_columns

    fields_of = bus_fields(compiled)
    for kind, fields in fields_of.items():
        topic_sources = [s for s in sources.values() if source_columns(s) is not None
                         and set(fields) <= set(source_columns(s) or {})]
        if not topic_sources:
            problems.append(Problem(f"{kind} source", f"no Kafka source with the fields "
                                    f"the stream parses: {list(fields)}",
                                    "a KafkaSource whose JSON schema has them"))
    done["kafka message schemas"] = ", ".join(f"{k}: {len(v)} fields"
                                              for k, v in fields_of.items())
    from ffs.validation import suites

    done["great expectations"] = ", ".join(
        f"{s.name} ({len(s.expectations)})" for s in (suites.transactions_suite(),
                                                      suites.labels_suite(),
                                                      suites.features_suite()))
    from ffs.analytics import olap_store, pinot_config

    cols = {c["name"] for c in pinot_config.enriched_schema()["metricFieldSpecs"]} | {
        c["name"] for c in pinot_config.enriched_schema().get("dimensionFieldSpecs", [])}
    missing = [f for f in (w.name for w in compiled.windows) if f not in cols]
    if missing:
        problems.append(Problem("Pinot schema", f"features {missing} have no column",
                                "run `ffs pinot generate` after apply"))
    done["pinot, duckdb"] = (f"{len(cols)} enriched columns, "
                             f"{len(olap_store.table_columns())} analytics columns")
    done["features"] = f"{n} in service {compiled.service}"
    return done, problems


def apply(cfg: Config, log: Callable[[str], None] = print, register: bool = True,
          ) -> ApplySummary:
    started = time.perf_counter()
    repo = R.repo_dir(cfg)
    log(f"loading {repo}")
    contents = R.parse(repo)
    compiled = R.compile_contents(contents, cfg)
    # the engines below read the declarations of the repo the process runs: this one
    os.environ["FFS_FEATURES_REPO"] = str(repo)
    R.save(repo, R.digest(repo, cfg), compiled)
    import ffs.transformations.features as loaded

    if [w.name for w in loaded.WINDOW_FEATURES] != [w.name for w in compiled.windows]:
        raise RepoError([Problem("ffs apply", "this process already runs another repo's "
                                 "features", "run `ffs --repo PATH apply` in a new process")])
    engines, problems = _engine_checks(compiled, contents)
    if problems:
        raise RepoError(problems)
    for engine, what in engines.items():
        log(f"  {engine}: {what}")
    declared = sorted(set(compiled.topics.values()))
    reads = [cfg.kafka.transactions_topic, cfg.kafka.labels_topic]
    if declared and not set(declared) <= set(reads):
        # the stream's topics are deployment settings; say so when the repo names others
        log(f"  note: the stream reads the config's topics {', '.join(reads)} "
            f"(kafka.transactions_topic, kafka.labels_topic); the repo's sources name "
            f"{', '.join(declared)}")
    where = "not registered (--check)"
    if register:
        where = _register(repo, contents)
        log(f"  registered in {where}")
    return ApplySummary(repo, compiled, engines, where, time.perf_counter() - started)


def _register(repo: Path, contents) -> str:
    """Feast's own apply of the collected objects to the registry (what `feast apply` does
    after parsing): adds, updates, and deletes what the repo no longer declares. Feast's
    online-store tables are neither created nor dropped: the product keeps its own online
    state (`ffs materialize`, the stream), so registering needs no Redis."""
    from feast import FeatureStore
    from feast.repo_operations import extract_objects_for_apply_delete

    from ffs.config import load_config

    os.environ.setdefault(R.FEAST_REDIS_ENV, R.feast_redis_connection(load_config()))
    with R.inside(repo):
        store = FeatureStore(repo_path=str(repo))
        to_apply, to_delete, _keep, _drop = extract_objects_for_apply_delete(
            store.project, store.registry, contents)
        store._get_provider().update_infra = _registry_only  # type: ignore[method-assign]
        store.apply([*contents.data_sources, *to_apply], objects_to_delete=to_delete,
                    partial=False)
    reg = store.config.registry
    kind = getattr(reg, "registry_type", "file")
    path = getattr(reg, "path", "")
    if kind == "sql":
        from urllib.parse import urlsplit

        u = urlsplit(str(path))
        path = f"{u.scheme}://{u.hostname}:{u.port}{u.path}"  # no credentials in the log
    return f"Feast {kind} registry {path} (project {store.project})"


def _registry_only(*_args, **_kwargs) -> None:
    """Stands in for the provider's infrastructure update during `ffs apply`."""
