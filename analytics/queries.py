"""The analyst queries of the loaded feature repo, rendered for Pinot or DuckDB.

    render("riskiest_terminals", "pinot", now_ms=1533081599000)  -> SQL text

The queries themselves are the repo's (`<repo>/queries.py`, `QUERIES`: the shipped ones are
feature_repo/queries.py), written with the kit of analytics/query_kit.py, which says the
portability rules one text follows to run on Pinot and on DuckDB.
"""

from __future__ import annotations

import importlib.util
import sys

from ffs.analytics.query_kit import DIALECTS, TABLE, TX, Dialect, Query
from ffs.errors import InputError

__all__ = ["DIALECTS", "QUERIES", "TABLE", "Query", "now_sql", "params_for", "render"]


def _repo_queries() -> dict[str, Query]:
    """`QUERIES` of the loaded repo's queries.py (no Feast import: a plain module)."""
    from ffs.config import load_config
    from ffs.transformations.repo import repo_dir

    path = repo_dir(load_config()) / "queries.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location("ffs_repo_queries", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {q.name: q for q in getattr(module, "QUERIES", ())}


QUERIES: dict[str, Query] = _repo_queries()



def params_for(name: str, **params) -> dict:
    """Defaults merged with `params`, checked: every value is a number (they are pasted
    into SQL text, so nothing else may get through)."""
    q = _query(name)
    merged = {**q.defaults, **params}
    unknown = set(merged) - set(q.defaults) - {"now_ms"}
    if unknown:
        raise InputError(f"query {name!r}: unknown parameter(s) {sorted(unknown)}; "
                         f"known: now_ms, {sorted(q.defaults)}")
    if merged.get("now_ms") is None:
        raise InputError(f"query {name!r} needs now_ms (the newest event_time_ms: now_sql())")
    out = {}
    for key, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value) if "." in str(value) else int(str(value))
            except ValueError:
                raise InputError(f"query {name!r}: parameter {key} must be a number, "
                                 f"found {value!r}") from None
        out[key] = int(value) if key in ("now_ms", "limit", "hours", "days") else value
    if out.get("limit", 1) < 1:
        raise InputError(f"query {name!r}: limit must be >= 1, found {out['limit']}")
    return out


def render(name: str, dialect: str, **params) -> str:
    if dialect not in DIALECTS:
        raise InputError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return _query(name).build(Dialect(dialect), params_for(name, **params))


def now_sql(dialect: str) -> str:
    """The newest transaction time in the table: the "now" every query is anchored to."""
    del dialect  # the same text on both; the argument keeps call sites uniform
    return f"SELECT MAX(event_time_ms) AS now_ms FROM {TABLE} WHERE {TX} LIMIT 1"


def _query(name: str) -> Query:
    try:
        return QUERIES[name]
    except KeyError:
        raise InputError(f"unknown query {name!r}; known: {sorted(QUERIES)}") from None
