"""A few rows' features from their reply, as straight-line Python generated per entity.

The read script is generated from the plans so Redis interprets no plan per row
(online/scripts.py); this does the same for the client's side of a small read. For one
entity's features (the client's `_Op`s) it writes one function: a loop over the rows whose
body computes every feature in turn, with the reply positions, windows' flags and horizons
written in as constants. Interpreting the ops instead (a loop over features, a branch per
aggregation, a list per step) was most of a 1-row read's assembly.

The expressions are those of `assemble_arrays` (online/client.py), in the same order on
Python numbers, so the same floats: tests/unit/test_assemble.py compares the two ways on
random replies, and tests/integration/test_parity.py reads a repo with every aggregation one
row at a time and in batches against a real Redis.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from ffs.transformations.declarations import CENTS, NULL_CENTS, Agg

__all__ = ["RowAssembler", "row_assembler"]

# rows (the reply's, as lists), adds (the scored transaction joins its windows), ts (read
# times), cents (value column -> the scored transaction's hundredths) -> (one list per op,
# the statuses every op of the entity shares)
RowAssembler = Callable[[list, list, list, dict], tuple[list[list], list[str]]]


@functools.lru_cache(maxsize=64)
def row_assembler(ops: tuple[Any, ...], present: str, missing: str) -> RowAssembler:
    """The function for these ops (a tuple of the client's frozen `_Op`s, so cached)."""
    columns = sorted({op.column for op in ops if op.column and op.at_t
                      and op.agg in (Agg.SUM, Agg.MEAN, Agg.STD, Agg.MIN, Agg.MAX)})
    mine = {c: f"m{k}" for k, c in enumerate(columns)}
    body = [f"    {mine[c]}s = cents[{c!r}]" for c in columns]
    body += [f"    f{j} = []" for j in range(len(ops))]
    body += ["    status = []",
             "    for i in range(len(rows)):",
             "        r = rows[i]; x = adds[i]; t = ts[i]",
             *[f"        {mine[c]} = {mine[c]}s[i]" for c in columns],
             "        status.append(PRESENT if r[0] or x else MISSING)"]
    for j, op in enumerate(ops):
        body += [f"        # {op.name}", *(f"        {line}" for line in _feature(j, op, mine))]
    body.append(f"    return [{', '.join(f'f{j}' for j in range(len(ops)))}], status")
    source = "def assemble(rows, adds, ts, cents):\n" + "\n".join(body) + "\n"
    namespace: dict[str, Any] = {"CENTS": CENTS, "NULL": float(NULL_CENTS), "math": math,
                                 "PRESENT": present, "MISSING": missing}
    exec(compile(source, f"<row assembly: {', '.join(op.name for op in ops)}>", "exec"),
         namespace)
    fn = namespace["assemble"]
    fn.source = source  # inspect cannot find generated code: for whoever debugs it
    return fn


def _count(op) -> list[str]:
    kind, a, b = op.n
    n = f"r[{b}] - r[{a}]" if kind == "edges" else f"r[{a}]"
    return [f"n = {n}" + (" + (1 if x else 0)" if op.at_t else "")]


def _feature(j: int, op, mine: dict[str, str]) -> Sequence[str]:
    """The statements that append feature j's value for row r to f{j}."""
    out = f"f{j}.append"
    agg = op.agg
    lines = _count(op) if op.n[0] else []
    if agg is Agg.COUNT:
        return [*lines, f"{out}(n)"]
    if agg in (Agg.SUM, Agg.MEAN, Agg.STD):
        m = f"({mine[op.column]} if x else 0)" if op.at_t else "0"
        lines += [f"m = {m}", f"s = r[{op.cols[1]}] - r[{op.cols[0]}] + m"]
        if agg is Agg.SUM:
            return [*lines, f"{out}(s / CENTS)"]
        if agg is Agg.MEAN:
            return [*lines, f"{out}(s / max(n, 1) / CENTS if n > 0 else None)"]
        return [*lines,
                "if n >= 2:",
                "    v = float(m)",
                f"    q = float(r[{op.cols[3]}] - r[{op.cols[2]}]) + v * v",
                "    nf, sf = float(n), float(s)",
                f"    {out}(math.sqrt(max((q - sf * sf / nf) / (nf - 1), 0.0)) / CENTS)",
                "else:",
                f"    {out}(None)"]
    if agg is Agg.FRAUD_RATE:
        return [*lines, f"{out}(r[{op.cols[0]}] / max(n, 1) if n > 0 else 0.0)"]
    k = op.cols[0] if op.cols else 0
    if agg is Agg.COUNT_DISTINCT:
        if op.at_t:
            return [f"{out}(r[{k}] + (1 if x and r[{k + 1}] == 0 else 0))"]
        return [f"{out}(r[{k}])"]
    if agg in (Agg.MIN, Agg.MAX):
        lines = [f"b = float(r[{k}]) if r[{k}] >= 0 else None  # below 0: an empty window"]
        if op.at_t:
            pick = "max" if op.is_max else "min"
            c = mine[op.column]
            lines += ["if x:", f"    b = float({c}) if b is None else {pick}(b, float({c}))"]
        return [*lines, f"{out}(None if b is None else b / CENTS)"]
    if agg is Agg.FIRST_SEEN:
        first = f"t if r[{k}] < 0 and x else r[{k}]" if op.at_t else f"r[{k}]"
        return [f"first = {first}", f"{out}(float(t - first) if first >= 0 else None)"]
    if agg is Agg.LAST:
        return [f"v = float(r[{k}])", f"{out}(v / CENTS if v > NULL else None)"]
    if agg is None:  # recency: the previous event strictly before t, within the horizon
        return ["gap = float(t - r[1])",
                f"{out}(gap if r[1] >= 0 and gap < {op.horizon!r} else None)"]
    raise ValueError(f"{op.name}: no row assembly for aggregation {agg}")
