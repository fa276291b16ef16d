"""A derived column's number rule gives the same values for a request's few rows (plain
Python) as for a batch's many (NumPy)."""

import math

import numpy as np
import pytest

from ffs.transformations.derived import _numbers
from ffs.transformations.schema import MAX_AMOUNT

# what NumPy reads as numbers in one go, then what it refuses (read value by value)
NUMBERS = [0, 1, 2.5, -0.01, MAX_AMOUNT, MAX_AMOUNT + 1, None, math.nan, math.inf, -math.inf,
           True, False, np.float32(3.25), np.int64(7), "4.5", " 2 ", "1e400"]
OTHERS = ["abc", [1], {}, object()]


@pytest.mark.parametrize("values", [NUMBERS, NUMBERS + OTHERS])
def test_few_and_many_rows_give_the_same_numbers(values):
    few = [_numbers([v]) for v in values]  # one row each: the plain-Python way
    many = _numbers(values * 3)[:len(values)]  # over 32 rows: the NumPy way
    assert len(values * 3) > 32
    for v, one, big in zip(values, few, many, strict=True):
        assert one.dtype == np.float64 and len(one) == 1
        assert (math.isnan(one[0]) and math.isnan(big)) or one[0] == big, v


def test_the_rule_itself():
    got = _numbers([1.5, -1, None, "x", MAX_AMOUNT + 1])
    assert got[0] == 1.5 and all(math.isnan(x) for x in got[1:])
