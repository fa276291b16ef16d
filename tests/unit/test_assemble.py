"""The online client's two ways of turning a script reply into features (online/client.py):
`assemble_arrays` (numpy, for batches) and `assemble_rows` (plain Python generated per
entity, online/row_assembly.py, for a few rows) give the same values, of the same Python
types, for every feature of the loaded repo, on random replies: empty and full windows, zero
and negative counts, nulls, the scored transaction joining its windows or not. The parity
suite (tests/integration/test_parity.py) reads its points both in one batch and one at a
time against a real Redis, under a repo with every aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffs.errors import InputError
from ffs.online import client as C
from ffs.online.plan import compile_plans
from ffs.transformations.declarations import NULL_CENTS
from ffs.transformations.features import (
    INPUT_COLUMNS,
    KEY_COLUMNS,
    OPTIONAL_COLUMNS,
    VALUE_COLUMNS,
)

PLANS = compile_plans()
T0 = 1_700_000_000
# what a reply's numbers can be: the markers of nothing (-1), small counts, times, big sums
CHOICES = np.array([-1, 0, 1, 2, 3, 7, 86_400, T0 - 3_600, 1_234_567, 10**12], dtype=np.int64)


def _requests(rng, n: int) -> C._Requests:
    rows = []
    for i in range(n):
        row: dict[str, object] = {k: int(rng.integers(1, 50)) for k in KEY_COLUMNS}
        if rng.random() < 0.7:  # a scored transaction; else an id-only read at as_of
            row.update({"transaction_id": 10_000 + i,
                        "event_timestamp": T0 - int(rng.integers(0, 99))})
            row.update({c: float(rng.choice([0.0, 0.01, 12.5, 9_999.99]))
                        for c, kind in VALUE_COLUMNS.items() if kind == "number"
                        # an optional column (a coordinate) left out: its null is carried
                        and not (c in OPTIONAL_COLUMNS and rng.random() < 0.3)})
        rows.append(row)
    return C._requests(rows, T0, C.DEFAULT_IDS, KEY_COLUMNS)


def _reply(rng, plan, n: int) -> np.ndarray:
    raw = rng.choice(CHOICES, size=(n, plan.width))
    raw[:, 0] = rng.integers(0, 2, n)  # exists
    for item in plan.lasts:  # a last value: a null or none is NULL_CENTS
        k = plan.last_at(item)
        raw[:, k] = np.where(rng.random(n) < 0.3, NULL_CENTS, raw[:, k] - 500)
    return raw


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("n", [1, 2, 5, 8, C.SMALL_BATCH])
def test_rows_and_arrays_give_the_same_features(n):
    rng = np.random.default_rng(n)
    checked = 0
    for _ in range(300):
        req = _requests(rng, n)
        for plan in PLANS:
            raw = _reply(rng, plan, n)
            add = req.carries_tx & (rng.random(n) < 0.6)
            ops = C._compile_ops(plan)
            by_rows: tuple[dict, dict] = ({}, {})
            by_arrays: tuple[dict, dict] = ({}, {})
            C.assemble_rows(plan, ops, req, raw, add, *by_rows)
            C.assemble_arrays(plan, ops, req, raw, add, *by_arrays)
            assert by_rows[0].keys() == by_arrays[0].keys() == {op.name for op in ops}
            # a feature adding a carried null goes the arrays way only (assemble)
            nulls = {c for c in C.cents_read(ops) if req.null_in([c])}
            for name in {op.name for op in ops if op.column not in nulls}:
                got, want = by_rows[0][name], by_arrays[0][name]
                assert len(got) == len(want) == n
                bad = [(i, got[i], want[i]) for i in range(n) if not _same(got[i], want[i])]
                assert not bad, f"{plan.entity.name}.{name}: rows != arrays at {bad[:3]}"
                assert by_rows[1][name] == by_arrays[1][name], name
                checked += n
    assert checked > 0


def test_small_reads_take_the_rows_way_and_batches_the_arrays_way(monkeypatch):
    taken: list[str] = []
    monkeypatch.setattr(C, "assemble_rows", lambda *a: taken.append("rows"))
    monkeypatch.setattr(C, "assemble_arrays", lambda *a: taken.append("arrays"))
    rng = np.random.default_rng(0)
    for n in (1, C.SMALL_BATCH, C.SMALL_BATCH + 1):
        req = _requests(rng, n)
        C.assemble(PLANS[0], C._compile_ops(PLANS[0]), req, _reply(rng, PLANS[0], n),
                   req.carries_tx, {}, {})
    assert taken == ["rows", "rows", "arrays"]


def test_a_carried_null_sends_a_small_read_the_arrays_way_only_if_a_feature_adds_it(
        monkeypatch):
    taken: list[str] = []
    monkeypatch.setattr(C, "assemble_rows", lambda *a: taken.append("rows"))
    monkeypatch.setattr(C, "assemble_arrays", lambda *a: taken.append("arrays"))
    optional = sorted(OPTIONAL_COLUMNS)
    if not optional:
        pytest.skip("the loaded repo has no optional value column")
    row = {**{k: 7 for k in KEY_COLUMNS}, "transaction_id": 1, "event_timestamp": T0,
           **{c: 1.0 for c, kind in VALUE_COLUMNS.items()
              if kind == "number" and c not in OPTIONAL_COLUMNS}}
    req = C._requests([row], T0, C.DEFAULT_IDS, KEY_COLUMNS)
    assert req.carries_tx[0] and req.null_in(optional)
    plan = PLANS[0]
    ops = [op for op in C._compile_ops(plan) if op.column not in OPTIONAL_COLUMNS]
    # (never run: only the way taken is recorded)
    adding = [C._Op(f"{agg.value}_of_a_coordinate", agg, True, column=optional[0])
              for agg in (C.Agg.SUM, C.Agg.MEAN, C.Agg.STD, C.Agg.MIN, C.Agg.MAX)]
    delayed = C._Op("delayed_sum", C.Agg.SUM, False, column=optional[0])  # no scored value
    for chosen in (ops, [*ops, delayed], *([*ops, op] for op in adding)):
        C.assemble(plan, chosen, req, np.zeros((1, plan.width), np.int64), req.carries_tx,
                   {}, {})
    assert taken == ["rows", "rows", *["arrays"] * len(adding)]


# numbers whose hundredth is a tie, or a double just below or above one, and the limits
EDGY = [0.0, 0.005, 0.015, 0.125, 2.675, 1.005, 12.5, 9_999.995, 123_456.785, 1e9]


@pytest.mark.parametrize("n", [1, C.SMALL_BATCH, C.SMALL_BATCH + 1])
def test_a_request_carries_its_values_in_the_hundredths_every_engine_keeps(n):
    """A small request's hundredths are computed in Python numbers, a batch's by to_cents:
    both must be to_cents of the carried values (0 where a row carries none)."""
    from ffs.online import layout

    rng = np.random.default_rng(50 + n)
    for _ in range(100):
        rows = []
        for i in range(n):
            row: dict[str, object] = {k: int(rng.integers(1, 50)) for k in KEY_COLUMNS}
            if rng.random() < 0.8:
                row.update({"transaction_id": 10_000 + i, "event_timestamp": T0 - i})
                for c, kind in INPUT_COLUMNS.items():
                    if kind != "number" or rng.random() < 0.1:
                        continue  # (a required value left out: the row carries nothing)
                    v = float(rng.choice(EDGY))
                    if c in OPTIONAL_COLUMNS:
                        v = None if rng.random() < 0.3 else v * rng.choice([-1, 1])
                    row[c] = v
            rows.append(row)
        req = C._requests(rows, T0, C.DEFAULT_IDS, KEY_COLUMNS)
        for c, got in req.cents.items():
            carried = np.where(req.carries_tx, np.asarray(req.values[c], dtype=np.float64), 0.0)
            assert got.dtype == np.int64
            assert got.tolist() == layout.to_cents(carried).tolist(), c


@pytest.mark.parametrize("value", [1e9 + 1, 1e20, 1e300])
def test_a_value_beyond_the_data_model_s_limit_is_refused(value):
    row = {**{k: 7 for k in KEY_COLUMNS}, "transaction_id": 1, "event_timestamp": T0}
    numbers = [c for c, kind in INPUT_COLUMNS.items() if kind == "number"]
    assert numbers
    for c in numbers:
        for v in ([value, -value] if c in OPTIONAL_COLUMNS else [value]):
            with pytest.raises(InputError, match=c):
                C._requests([{**row, c: v}], T0, C.DEFAULT_IDS, KEY_COLUMNS)
