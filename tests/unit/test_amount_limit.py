"""One amount limit on every path, with one reason (issue 10, defect 5): batch loading sets
the rows aside with it (they used to overflow the integer cents: 1e300 and 9e16 gave
garbage and negative means), the stream and the producer refuse them as bad_amount, the
validation gate fails on them, and HTTP answers 400 (tests/integration/test_server.py)."""

from __future__ import annotations

import functools
import json

import pandas as pd
import pytest

from ffs.bus import messages as M
from ffs.transformations.ids import ALL_STRING
from ffs.transformations.schema import MAX_AMOUNT, normalize_transactions

# these messages carry text ids ("t-1", "c1"): read with every id column declared string
parse_transaction = functools.partial(M.parse_transaction, id_types=ALL_STRING)
parse_label = functools.partial(M.parse_label, id_types=ALL_STRING)


def _tx(amounts):
    n = len(amounts)
    return pd.DataFrame({"transaction_id": range(n), "customer_id": 1, "terminal_id": 2,
                         "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
                         "amount": amounts})


def test_batch_sets_aside_every_amount_over_the_limit_with_the_reason():
    out = normalize_transactions(_tx([1e300, 9e16, MAX_AMOUNT + 1, MAX_AMOUNT, 12.5]))
    assert list(out.rows["amount"]) == [MAX_AMOUNT, 12.5]
    assert sorted(out.rejects["transaction_id"].astype(int)) == [0, 1, 2]
    assert set(out.rejects["reason"]) == {f"amount above the limit of {MAX_AMOUNT:g}"}


@pytest.mark.parametrize("amount", [1e300, 9e16, MAX_AMOUNT * 10])
def test_the_stream_refuses_the_same_amounts_as_bad_amount(amount):
    raw = json.dumps({"transaction_id": "t", "customer_id": "c", "terminal_id": "m",
                      "event_timestamp": "2024-01-01T00:00:00Z", "amount": amount})
    with pytest.raises(M.Refused) as exc:
        parse_transaction(raw)
    assert exc.value.reason == M.BAD_AMOUNT and f"{MAX_AMOUNT:g}" in exc.value.detail


def test_the_validation_gate_fails_on_them():
    from ffs.validation.suites import transactions_suite

    limits = [e for e in transactions_suite().expectations
              if getattr(e, "column", None) == "amount" and getattr(e, "max_value", None)
              == MAX_AMOUNT]
    assert limits and limits[0].meta["severity"] == "fail"  # blocks publishing
