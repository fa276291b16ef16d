"""The data model: normalizing raw rows, and every bad row coming back with its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ffs.errors import InputError
from ffs.transformations import schema


def raw_tx():
    return pd.DataFrame({
        "transaction_id": [1, 2, 3, 4, 5, 6, 7, 2],
        "event_timestamp": ["2024-01-01 00:00:01", "2024-01-01T00:00:02Z", "not a time",
                            "2024-01-01 00:00:04", "2024-01-01 00:00:05",
                            "2024-01-01 00:00:06.900", None, "2024-01-01 00:00:08"],
        "customer_id": [1, 1, 1, None, 2, 2, 2, 2],
        "terminal_id": [9, 9, 9, 9, 9, 9, 9, 9],
        "amount": [1.0, -5.0, 3.0, 4.0, float("nan"), 6.0, 7.0, 8.0],
        "channel": ["pos"] * 8,
    })


def test_bad_transactions_are_rejected_with_reasons_not_dropped():
    norm = schema.normalize_transactions(raw_tx())
    # the second delivery of id 2 is valid, so it is kept even though the first was not
    assert list(norm.rows["transaction_id"]) == [1, 6, 2]
    reasons = dict(zip(norm.rejects["transaction_id"], norm.rejects["reason"], strict=False))
    assert reasons["2"] == "amount is negative"
    assert reasons["3"] == "event_timestamp unparseable"
    assert reasons["4"] == "missing customer_id"
    assert reasons["5"] == "missing amount"
    assert reasons["7"] == "event_timestamp missing"
    assert len(norm.rows) + len(norm.rejects) == len(raw_tx())


def test_duplicate_transaction_id_keeps_the_first_valid_one():
    raw = raw_tx().iloc[[0, 0]]
    norm = schema.normalize_transactions(raw)
    assert len(norm.rows) == 1 and list(norm.rejects["reason"]) == ["duplicate transaction_id"]


def test_timestamps_are_utc_and_floored_to_the_second_and_extras_kept():
    norm = schema.normalize_transactions(raw_tx())
    row = norm.rows.set_index("transaction_id").loc[6]
    assert row["event_timestamp"] == pd.Timestamp("2024-01-01 00:00:06", tz="UTC")
    assert row["channel"] == "pos"


def test_handbook_column_names_are_accepted():
    raw = pd.DataFrame({"TRANSACTION_ID": [1], "TX_DATETIME": [pd.Timestamp("2018-04-01")],
                        "CUSTOMER_ID": [3], "TERMINAL_ID": [4], "TX_AMOUNT": [5.5],
                        "TX_FRAUD": [0]})
    norm = schema.normalize_transactions(raw)
    assert norm.rows.loc[0, "amount"] == 5.5 and "TX_FRAUD" in norm.rows


def test_missing_columns_is_a_clear_error():
    with pytest.raises(InputError, match=r"missing column\(s\) \['amount'\]"):
        schema.normalize_transactions(raw_tx().drop(columns="amount"))


def test_bad_labels_are_rejected_with_reasons():
    tx = schema.normalize_transactions(raw_tx()).rows
    labels = pd.DataFrame({
        "transaction_id": [1, 1, 6, 99, 6, 1, 6],
        "is_fraud": [1, 1, 2, 1, 0, 0, 1],
        "label_timestamp": ["2024-01-02", "2024-01-02", "2024-01-02", "2024-01-02",
                            "2023-12-31", "2024-01-02", "2024-01-03"],
    })
    norm = schema.normalize_labels(labels, tx)
    assert list(norm.rows["transaction_id"]) == [6]
    assert norm.rows.loc[0, "is_fraud"] == 1
    # (1, fraud) and (1, genuine) at the same instant contradict each other: both refused
    assert sorted(norm.rejects["reason"]) == sorted([
        "duplicate label", "is_fraud must be 0 or 1", "label for unknown transaction_id",
        "label_timestamp before the transaction",
        "conflicting labels for one transaction at one time",
        "conflicting labels for one transaction at one time"])


def test_empty_labels_normalize_to_an_empty_frame():
    tx = schema.normalize_transactions(raw_tx()).rows
    norm = schema.normalize_labels(pd.DataFrame(columns=list(schema.LABEL_COLUMNS)), tx)
    assert norm.rows.empty and norm.rejects.empty


def test_csv_and_parquet_inputs_read_the_same(tmp_path):
    norm = schema.normalize_transactions(raw_tx()).rows
    norm.to_csv(tmp_path / "t.csv", index=False)
    norm.to_parquet(tmp_path / "t.parquet", index=False)
    a = schema.normalize_transactions(schema.read_table(tmp_path / "t.csv")).rows
    b = schema.normalize_transactions(schema.read_table(tmp_path / "t.parquet")).rows
    pd.testing.assert_frame_equal(a[list(schema.TX_COLUMNS)], b[list(schema.TX_COLUMNS)])


def test_unreadable_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        schema.read_table(tmp_path / "nope.parquet")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputError, match="unsupported input format"):
        schema.read_table(tmp_path / "x.json")


def test_string_ids_are_supported_when_declared():
    from ffs.transformations.ids import INT, STRING, IdTypes

    raw = raw_tx().iloc[[0, 5]].assign(customer_id=["c-1", "c-2"], terminal_id=["t-1", "t-1"])
    norm = schema.normalize_transactions(raw, IdTypes(INT, default=STRING))
    assert list(norm.rows["customer_id"]) == ["c-1", "c-2"]
    assert np.issubdtype(norm.rows["transaction_id"].dtype, np.integer)


def test_epoch_numbers_are_read_by_each_values_own_magnitude():
    """Issue 10, defect 6: the unit came from the column's largest value, so one millisecond
    value put 199 rows given in seconds into 1970, silently."""
    from ffs.transformations.timestamps import to_utc

    secs = 1_704_067_200  # 2024-01-01T00:00:00Z
    values = pd.Series([secs + i for i in range(199)] + [(secs + 500) * 1000])
    out = to_utc(values)
    assert (out.dt.year == 2024).all()
    assert out.iloc[-1] == pd.Timestamp(secs + 500, unit="s", tz="UTC")
    # every unit, integers divided exactly (no float rounding across a second)
    mixed = pd.Series([secs, secs * 10**3 + 999, secs * 10**6 + 999_999,
                       secs * 10**9 + 999_999_999])
    assert (to_utc(mixed) == pd.Timestamp(secs, unit="s", tz="UTC")).all()
    floats = pd.Series([float(secs), secs * 1e3 + 999.0, None])
    got = to_utc(floats)
    assert got.iloc[0] == got.iloc[1] == pd.Timestamp(secs, unit="s", tz="UTC")
    assert pd.isna(got.iloc[2])


def test_a_valid_date_out_of_the_supported_range_is_said_so_not_unparseable():
    """Issue 10, defect 11: a far-future timestamp was reported as unparseable."""
    raw = pd.DataFrame({"transaction_id": [1, 2, 3], "customer_id": 1, "terminal_id": 2,
                        "amount": 1.0,
                        "event_timestamp": ["2999-01-01T00:00:00Z", "yesterday",
                                            "2024-01-01T00:00:00Z"]})
    norm = schema.normalize_transactions(raw)
    reasons = dict(zip(norm.rejects["transaction_id"], norm.rejects["reason"], strict=True))
    assert reasons == {"1": "event_timestamp out of range (supported: 1970-01-01 to 2262-04-11)",
                       "2": "event_timestamp unparseable"}
    assert list(norm.rows["transaction_id"]) == [3]


# (timestamp, in the one supported range)
RANGE_CASES = [("1969-12-31T23:59:59Z", False), ("1970-01-01T00:00:00Z", True),
               ("1800-06-01T00:00:00Z", False), ("2262-04-11T23:47:16Z", True),
               ("2262-04-11T23:47:17Z", False), ("2999-01-01T00:00:00Z", False),
               (1_704_067_200_000_000_000, True),  # epoch nanoseconds: 2024
               (-5, False)]


@pytest.mark.parametrize(("value", "ok"), RANGE_CASES, ids=[str(c[0]) for c in RANGE_CASES])
def test_one_timestamp_range_on_every_path(value, ok):
    """Issue 10, defect 11: batch took 1677-2262, HTTP 1970-9999, the stream anything ISO
    text said and no epoch nanoseconds. One range now, each refusal saying it."""
    import json

    from ffs.bus import messages as M
    from ffs.online.client import _seconds
    from ffs.online.server import BadRequest, _epoch

    raw = pd.DataFrame({"transaction_id": [1], "customer_id": [1], "terminal_id": [2],
                        "amount": [1.0], "event_timestamp": pd.Series([value], dtype=object)})
    norm = schema.normalize_transactions(raw)
    assert len(norm.rows) == int(ok), norm.rejects.to_dict("records")
    if not ok:
        assert "out of range (supported: 1970-01-01 to 2262-04-11)" in norm.rejects["reason"][0]
    msg = json.dumps({"transaction_id": 1, "customer_id": 1, "terminal_id": 2, "amount": 1.0,
                      "event_timestamp": value})
    try:
        M.parse_transaction(msg)
        stream_ok = True
    except M.Refused as exc:
        stream_ok = False
        assert exc.reason == M.BAD_TIMESTAMP
    http_ok = client_ok = True
    try:
        _epoch(value, "as_of")
    except BadRequest as exc:
        http_ok = False
        assert "out of range" in str(exc)
    try:
        _seconds(value)
    except InputError as exc:
        client_ok = False
        assert "out of range" in str(exc)
    assert (stream_ok, http_ok, client_ok) == (ok, ok, ok)


def test_transaction_columns_are_the_loaded_repos():
    from ffs.transformations.features import KEY_COLUMNS, VALUE_COLUMNS

    assert schema.TX_COLUMNS == ("transaction_id", "event_timestamp", *KEY_COLUMNS,
                                 *VALUE_COLUMNS)
    assert schema.ID_COLUMNS == ("transaction_id", *KEY_COLUMNS)
    rows = schema.normalize_transactions(raw_tx()).rows
    assert list(rows.columns[:len(schema.TX_COLUMNS)]) == list(schema.TX_COLUMNS)


def test_every_number_column_has_the_amount_rules_named_by_it():
    raw = pd.DataFrame({"transaction_id": range(5), "customer_id": 1, "terminal_id": 2,
                        "event_timestamp": "2024-01-01T00:00:00Z",
                        "amount": ["1.5", "x", float("inf"), -1, 2e9]})
    norm = schema.normalize_transactions(raw)
    assert norm.rows["amount"].tolist() == [1.5]
    assert norm.rejects["reason"].tolist() == [
        "amount is not a number", "amount is not finite", "amount is negative",
        "amount above the limit of 1e+09"]
