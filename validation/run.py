"""Run a suite on a batch with Great Expectations and turn the result into a plain report.

GX is imported only when something is validated: importing it takes seconds (it pulls in
scipy, altair and pyspark), which the CLI should not pay for `--help`.

A batch is a pandas or a PySpark DataFrame. A Spark one is validated where it lives, by GX's
Spark engine (aggregates and a few filtered samples; nothing is collected to the driver), with
the same suites: only column types are named differently there (`suites.for_spark`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ffs.errors import InputError, ValidationFailed
from ffs.validation import gx_import

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame

KINDS = ("transactions", "labels", "features")


@dataclass
class CheckResult:
    suite: str
    check: str  # the GX expectation type, e.g. expect_column_min_to_be_between
    column: str | None
    severity: str  # "fail" or "warn"
    success: bool
    details: str

    def line(self) -> str:
        where = f" on {self.column}" if self.column else ""
        return f"{self.check}{where}: {self.details}"


@dataclass
class ValidationReport:
    suite: str
    rows: int
    results: list[CheckResult]
    seconds: float

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.severity == "fail" and not r.success]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.severity == "warn" and not r.success]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        n_warn = len(self.warnings)
        return (f"{self.suite}: {len(self.results)} checks, {len(self.failures)} failed, "
                f"{n_warn} warning{'' if n_warn == 1 else 's'} "
                f"({self.rows:,} rows, {self.seconds:.1f} s)")


def validate(kind: str, df: pd.DataFrame | SparkFrame,
             data_docs_dir: Path | None = None) -> ValidationReport:
    """Run every check of suite `kind` on `df` (pandas or PySpark); never stops at the first
    failure."""
    if kind not in KINDS:
        raise InputError(f"unknown validation suite {kind!r}; expected one of {list(KINDS)}")
    start = time.perf_counter()
    context, definitions = _session()
    spark = _is_spark(df)
    if spark:
        definitions = _spark_definitions()
    # BASIC gives unexpected counts and up to 20 example values, enough to act on a failure;
    # COMPLETE would also collect every bad row's index, which costs time on big batches (on
    # Spark, a job per check that brings every bad row's key to the driver).
    if isinstance(df, pd.DataFrame):
        result = definitions[kind].run(batch_parameters={"dataframe": df}, result_format="BASIC")
        rows = len(df)
    else:
        with _cached(df):
            # On Spark every check's examples are one more job (a few dozen on the feature
            # table): a first pass asks only pass or fail, and a batch that fails is run
            # again for the counts and examples its report needs.
            result = definitions[kind].run(batch_parameters={"dataframe": df},
                                           result_format="BOOLEAN_ONLY")
            if not result.success:
                result = definitions[kind].run(batch_parameters={"dataframe": df},
                                               result_format="BASIC")
            counted = _rows(result.results)
            rows = df.count() if counted is None else counted
    if data_docs_dir is not None:
        _build_docs(context, Path(data_docs_dir))
    columns = set(map(str, df.columns))
    checks = [_check(kind, r, columns) for r in result.results]
    return ValidationReport(kind, rows, checks, time.perf_counter() - start)


def prepare_in_background() -> None:
    """Import GX in a daemon thread, for a caller that validates later and waits on
    something else first: the Spark backfill normalizes its inputs in Spark tasks while its
    own Python sits idle, and the import (2-3 s) would otherwise start only when the first
    batch is validated. A second importer waits for this one (Python's import lock); a
    failed import here is raised again by the real one."""
    def load() -> None:
        with contextlib.suppress(Exception):
            gx_import.load()

    threading.Thread(target=load, name="gx-import", daemon=True).start()


def gate(report: ValidationReport) -> None:
    """Block publication when any fail-severity check failed; warnings only get reported."""
    if report.failures:
        raise ValidationFailed(f"{report.suite} batch", [f.line() for f in report.failures])


@functools.cache
def _session():
    """One in-memory GX context per process, so a Data Docs site lists every batch of a run."""
    gx = gx_import.load()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    from ffs.validation.suites import BUILDERS

    config = DataContextConfig(
        # In-memory stores and no default docs site: nothing is written unless asked.
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        # tqdm bars for every metric batch would spam the CLI.
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    source = context.data_sources.add_pandas("ffs")
    definitions = {}
    for kind in KINDS:
        batch = source.add_dataframe_asset(name=kind).add_batch_definition_whole_dataframe("batch")
        suite = context.suites.add(BUILDERS[kind]())
        definitions[kind] = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{kind}_batch", data=batch, suite=suite))
    return context, definitions


def _is_spark(df) -> bool:
    # Only a caller holding a Spark frame has imported pyspark; pandas users never import it.
    sql = sys.modules.get("pyspark.sql")
    return sql is not None and isinstance(df, sql.DataFrame)


@functools.cache
def _spark_definitions() -> dict[str, Any]:
    """The suites' validation definitions on GX's Spark datasource, added to the process's
    context on the first Spark batch (the engine binds to the active Spark session)."""
    gx = gx_import.load()

    from ffs.validation.suites import for_spark

    context, pandas_definitions = _session()
    # persist=False: GX would cache every batch and never release it; `_cached` does both.
    source = context.data_sources.add_spark("ffs_spark", persist=False)
    definitions = {}
    for kind in KINDS:
        batch = source.add_dataframe_asset(name=kind).add_batch_definition_whole_dataframe("batch")
        suite = pandas_definitions[kind].suite
        spark_suite = for_spark(suite)
        if spark_suite is not suite:
            spark_suite = context.suites.add(spark_suite)
        definitions[kind] = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{kind}_spark_batch", data=batch, suite=spark_suite))
    return definitions


# Plan nodes of a frame that is only read from files or memory, perhaps filtered or with
# fewer columns (the backfill's staged tables are such frames).
_PLAIN_READ = frozenset({"Project", "Filter", "LogicalRelation", "LocalRelation"})


@contextlib.contextmanager
def _cached(df):
    """Keep a Spark frame cached while GX runs its jobs on it (a few dozen aggregations and
    samples), so a costly lineage is computed once, then release it. A plain read of
    Parquet is not cached: each job then reads only the columns its checks need, rather than
    every column being cached first (which at 50 M rows spills to disk; on the handbook's
    feature table it took about the same time either way, BENCHMARKS.md 2026-12-04). A frame
    the caller cached stays as it was."""
    level = df.storageLevel
    mine = not (level.useMemory or level.useDisk) and not _plain_read(df)
    # PySpark 4 logs every analysis error it raises (with the JVM trace) on a logger of its
    # own; GX catches those of checks on a missing column and reports them as failed checks.
    errors = logging.getLogger("DataFrameQueryContextLogger")
    was = errors.level
    errors.setLevel(logging.CRITICAL)
    if mine:
        df.persist()  # memory and disk: a batch larger than memory spills
    try:
        yield df
    finally:
        errors.setLevel(was)
        if mine:
            df.unpersist()


def _plain_read(df) -> bool:
    """Whether `df`'s optimized plan only reads files or memory (see _PLAIN_READ); False
    when the plan cannot be inspected (then the frame is cached, as any other)."""
    try:
        nodes = [df._jdf.queryExecution().optimizedPlan()]
        while nodes:
            node = nodes.pop()
            if node.nodeName() not in _PLAIN_READ:
                return False
            children = node.children()
            nodes += [children.apply(i) for i in range(children.size())]
        return True
    except Exception:  # a Spark Connect frame has no JVM plan here
        return False


def _rows(results) -> int | None:
    """The batch's row count, as the checks already counted it (a Spark count is a job)."""
    for res in results:
        result = res.result or {}
        if res.expectation_config.type == "expect_table_row_count_to_be_between":
            if isinstance(result.get("observed_value"), int):
                return result["observed_value"]
        elif isinstance(result.get("element_count"), int):
            return result["element_count"]
    return None


def _build_docs(context, directory: Path) -> None:
    directory = directory.resolve()
    site = f"ffs_{hashlib.sha1(str(directory).encode(), usedforsecurity=False).hexdigest()[:12]}"
    if site not in context.list_data_docs_sites():
        context.add_data_docs_site(site, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(directory)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    directory.mkdir(parents=True, exist_ok=True)
    context.build_data_docs(site_names=[site])


def _check(kind: str, res, columns: set[str]) -> CheckResult:
    cfg = res.expectation_config
    column = cfg.kwargs.get("column")
    if column is not None and column not in columns:
        # Every check on a missing column errors; say why once, plainly, in each of them.
        details = "column is missing"
    else:
        details = _details(cfg.kwargs, res.result or {}, res.exception_info or {},
                           cfg.meta or {})
    return CheckResult(suite=kind, check=cfg.type, column=column,
                       severity=(cfg.meta or {}).get("severity", "fail"),
                       success=bool(res.success), details=details)


def _details(kwargs: dict, result: dict, exc: dict, meta: dict | None = None) -> str:
    """What was found and what was expected, in one line."""
    error = _error(exc)
    if error:
        return f"could not run: {error}"
    return "; ".join(p for p in (_found(result), _expected(kwargs, meta or {})) if p)


def _error(exc: dict) -> str | None:
    # GX nests metric errors by metric id, but puts an expectation's own error at the top.
    infos = [exc] + [v for v in exc.values() if isinstance(v, dict)]
    for info in infos:
        if info.get("raised_exception"):
            return str(info.get("exception_message") or "error").splitlines()[0]
    return None


def _found(result: dict) -> str:
    examples = [_plain(v) for v in (result.get("partial_unexpected_list") or [])[:5]]
    if all(_null(v) for v in examples):
        examples = []  # a null check's examples are nulls (NaN or NA in pandas, None in Spark)
    if "unexpected_count" in result and "element_count" in result:
        # Spark sums an empty batch's unexpected rows to null where pandas counts 0
        n, total = result["unexpected_count"] or 0, result["element_count"] or 0
        pct = result.get("unexpected_percent") or 0.0
        text = f"{n:,} of {total:,} rows unexpected ({pct:.3g}%)"
        return text + (f", e.g. {_short(examples)}" if n and examples else "")
    if "unexpected_count" in result:  # distinct-value checks count values, not rows
        return f"unexpected values {_short(examples)}" if result["unexpected_count"] else ""
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    if mismatched.get("missing"):
        return f"missing column(s) {sorted(mismatched['missing'])}"
    if "observed_value" in result and result["observed_value"] is None:
        return "no non-null values"  # min/max/mean of an empty or all-null column
    if result.get("observed_value") is not None and not isinstance(result["observed_value"], list):
        observed = _plain(result["observed_value"])
        return f"observed {observed:.6g}" if isinstance(observed, float) else f"observed {observed}"
    return ""


def _expected(kwargs: dict, meta: dict) -> str:
    parts = []
    bounds = [f"{op} {kwargs[key]:g}" for key, op in (("min_value", ">="), ("max_value", "<="))
              if kwargs.get(key) is not None]
    if bounds:
        parts.append("expected " + " and ".join(bounds))
    if kwargs.get("value_set") is not None:
        parts.append(f"expected in {sorted(kwargs['value_set'])}")
    if kwargs.get("type_") and meta.get("dtype"):  # a Spark type, for a declared dtype
        parts.append(f"expected {kwargs['type_']} (dtype {meta['dtype']})")
    elif kwargs.get("type_"):
        parts.append(f"expected dtype {kwargs['type_']}")
    if kwargs.get("mostly") not in (None, 1, 1.0):
        parts.append(f"mostly {kwargs['mostly']}")
    return ", ".join(parts)


def _null(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or other non-scalar example
        return False


def _plain(value):
    """NumPy scalars print as np.int64(2); their Python value prints as 2."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) else value


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
