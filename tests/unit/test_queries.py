"""Every analyst query renders for Pinot and DuckDB from one definition, within the subset
of SQL both run: explicit LIMIT, no joins / subqueries / window functions, numeric params."""

from __future__ import annotations

import re

import pytest

from ffs.analytics import queries
from ffs.analytics.queries import DIALECTS, QUERIES, render
from ffs.errors import InputError

NOW = 1_533_081_599_000
CASES = [(n, d) for n in QUERIES for d in DIALECTS]


@pytest.mark.parametrize(("name", "dialect"), CASES)
def test_renders_with_an_explicit_limit_and_portable_sql(name, dialect):
    sql = render(name, dialect, now_ms=NOW)
    assert re.search(r"\nLIMIT \d+$", sql), "Pinot adds LIMIT 10 when none is given"
    upper = sql.upper()
    for banned in (" JOIN ", " OVER ", " OVER(", " WITH ", "(SELECT", " UNION "):
        assert banned not in upper, f"{banned.strip()} is outside the single-stage subset"
    assert upper.count("SELECT") == 1
    assert f"FROM {queries.TABLE}" in sql
    # anchored to now (a parameter), not to the clock: every time literal is near NOW
    times = [int(x) for x in re.findall(r"\b1\d{12}\b", sql)]
    assert times and all(NOW - 60 * 86_400_000 <= t <= NOW for t in times)
    for col in QUERIES[name].columns:
        assert re.search(rf"\bAS {re.escape(col)}\b", sql) or re.search(
            rf"^SELECT .*\b{re.escape(col)}\b", sql), f"{col} not selected"


@pytest.mark.parametrize("name", list(QUERIES))
def test_each_dialect_gets_its_own_functions(name):
    duck, pinot = render(name, "duckdb", now_ms=NOW), render(name, "pinot", now_ms=NOW)
    for fn in ("DATETRUNC", "LASTWITHTIME", "PERCENTILE(", "FLOOR("):
        assert fn not in duck
    for fn in ("arg_max", "quantile_cont", "//"):
        assert fn not in pinot


@pytest.mark.parametrize("name", list(QUERIES))
def test_pinot_sql_parses(name):
    sqlglot = pytest.importorskip("sqlglot", reason="sqlglot not installed (optional check)")
    # sqlglot has no Pinot dialect: Pinot's text goes through its generic (ANSI) parser
    sqlglot.parse_one(render(name, "pinot", now_ms=NOW))
    sqlglot.parse_one(render(name, "duckdb", now_ms=NOW), read="duckdb")


def test_metadata_is_complete_for_the_dashboard():
    for q in QUERIES.values():
        m = q.meta()
        assert m["chart"] in ("bar", "line", "table", "drift") and m["title"] and m["columns"]
        if q.chart in ("bar", "line"):
            assert q.x in q.columns and q.y and set(q.y) <= set(q.columns)


def test_parameters_are_checked():
    assert "LIMIT 3" in render("riskiest_terminals", "pinot", now_ms=NOW, limit=3)
    assert "LIMIT 3" in render("riskiest_terminals", "pinot", now_ms=NOW, limit="3")
    with pytest.raises(InputError, match="needs now_ms"):
        render("riskiest_terminals", "duckdb")
    with pytest.raises(InputError, match="must be a number"):
        render("riskiest_terminals", "duckdb", now_ms=NOW, hours="1 OR 1=1")
    with pytest.raises(InputError, match="unknown parameter"):
        render("label_delay", "duckdb", now_ms=NOW, terminal="x")
    with pytest.raises(InputError, match="unknown query"):
        render("nope", "duckdb", now_ms=NOW)
    with pytest.raises(InputError, match="dialect"):
        render("label_delay", "mysql", now_ms=NOW)
    with pytest.raises(InputError, match="limit"):
        render("label_delay", "duckdb", now_ms=NOW, limit=0)


def test_query_command_prints_the_sql(capsys):
    import argparse

    from ffs.analytics.dashboard_cli import add_parsers
    from ffs.config import load_config

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["query", "label_delay", "--sql", "--dialect", "pinot",
                              "--param", f"now_ms={NOW}", "--param", "days=3"])
    assert args.fn(args, load_config(env={})) == 0
    assert capsys.readouterr().out.strip() == render("label_delay", "pinot", now_ms=NOW, days=3)
    with pytest.raises(InputError, match="NAME=VALUE"):
        args = parser.parse_args(["query", "label_delay", "--sql", "--param", "days"])
        args.fn(args, load_config(env={}))
