"""Issue 10, defect 2: one id model. Each id column's type is declared (`ids` in the config);
batch loading, the stream (and producer), online reads (client and HTTP) and training sets read
an id to the same canonical form, or refuse it by the same rule.

Before: batch merged "007", "7" and "7.0" while online "0124" was another customer; a training
set with "124" for the stored 124 found no events; labels with integer ids for string
transaction ids were "unknown"; batch kept ids (empty, 10,000 characters, tabs, '|') the stream
refused; ids above int64 raised a traceback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ffs.bus import messages as M
from ffs.config import Config, load_config
from ffs.errors import ConfigError, InputError
from ffs.jobs.batch.training_set import prepare_entities
from ffs.online.client import _id
from ffs.online.server import BadRequest, parse_request
from ffs.transformations import schema
from ffs.transformations.ids import (
    ALL_STRING,
    INT,
    STRING,
    BadId,
    IdTypes,
    canonical,
    canonical_series,
)

INTS = IdTypes()

# (value, canonical when int, canonical when string); None: refused
CASES = [
    (7, 7, "7"),
    (7.0, 7, "7"),
    ("7", 7, "7"),
    ("007", 7, "007"),
    ("7.0", 7, "7.0"),
    ("+7", 7, "+7"),
    (-3, -3, "-3"),
    (np.int64(12), 12, "12"),
    (2**63 - 1, 2**63 - 1, str(2**63 - 1)),
    (2**63, None, str(2**63)),  # text ids have no range
    ("99999999999999999999999", None, "99999999999999999999999"),
    (7.5, None, None),
    (2.0**60, None, None),  # not exact as a float
    (float("inf"), None, None),
    (True, None, None),
    ("", None, None),
    ("a\tb", None, None),
    ("a|b", None, None),
    ("a b", None, None),
    ("{tag}", None, None),
    ("x" * 128, None, "x" * 128),
    ("x" * 129, None, None),
    ("9" * 10_000, None, None),
    ("c-1", None, "c-1"),
]


@pytest.mark.parametrize(("value", "as_int", "as_string"), CASES,
                         ids=[repr(c[0])[:30] for c in CASES])
def test_canonical_form_by_declared_type(value, as_int, as_string):
    for kind, expected in ((INT, as_int), (STRING, as_string)):
        if expected is None:
            with pytest.raises(BadId):
                canonical(value, kind)
        else:
            got = canonical(value, kind)
            assert got == expected and type(got) is type(expected)


def _batch(value, types: IdTypes):
    raw = pd.DataFrame({"transaction_id": [1], "event_timestamp": ["2024-01-01T00:00:00Z"],
                        "customer_id": pd.Series([value], dtype=object), "terminal_id": [9],
                        "amount": [1.0]})
    norm = schema.normalize_transactions(raw, types)
    return norm.rows["customer_id"].iloc[0] if len(norm.rows) else None


def _stream(value, types: IdTypes):
    raw = json.dumps({"transaction_id": 1, "customer_id": value, "terminal_id": 9,
                      "event_timestamp": "2024-01-01T00:00:00Z", "amount": 1.0})
    try:
        return M.parse_transaction(raw, types).get("customer_id")
    except M.Refused as exc:
        assert exc.reason in (M.BAD_ID, M.BAD_TYPE), exc
        return None


def _http(value, types: IdTypes):
    body = json.dumps({"feature_service": "fraud_detection_v1",
                       "entities": {"customer_id": [value], "terminal_id": [9]}}).encode()
    try:
        rows, _, _, _ = parse_request(body, 10, types)
    except BadRequest as exc:
        assert exc.status == 400 and "customer_id[0]" in str(exc)
        return None
    return _id(rows[0]["customer_id"], types.of("customer_id"), "row 0")


def _training(value, types: IdTypes):
    entities = pd.DataFrame({"customer_id": pd.Series([value], dtype=object),
                             "terminal_id": [9], "event_timestamp": ["2024-01-01"]})
    try:
        return prepare_entities(entities, types)["customer_id"].iloc[0]
    except InputError as exc:
        assert "customer_id" in str(exc)
        return None


JSON_CASES = [c for c in CASES if not isinstance(c[0], (np.integer,))
              and c[0] != float("inf")]


@pytest.mark.parametrize("types", [INTS, ALL_STRING], ids=["int", "string"])
def test_every_path_keys_an_id_alike_or_refuses_it(types):
    """Batch, stream, HTTP + client and training set: the same key text, or all refuse."""
    for value, as_int, as_string in JSON_CASES:
        expected = as_int if types is INTS else as_string
        want = None if expected is None else str(expected)
        got = {name: fn(value, types) for name, fn in
               (("batch", _batch), ("stream", _stream), ("http", _http),
                ("training", _training))}
        keyed = {k: None if v is None else str(v) for k, v in got.items()}
        assert keyed == dict.fromkeys(got, want), (value, keyed)


def test_batch_merges_spellings_of_one_int_id_and_keeps_text_ids_apart():
    raw = pd.DataFrame({"transaction_id": [1, 2, 3],
                        "event_timestamp": ["2024-01-01T00:00:0%d" % i for i in range(3)],
                        "customer_id": ["007", "7", "7.0"], "terminal_id": [1, 1, 1],
                        "amount": [1.0, 2.0, 3.0]})
    assert schema.normalize_transactions(raw).rows["customer_id"].tolist() == [7, 7, 7]
    as_text = schema.normalize_transactions(raw, ALL_STRING).rows["customer_id"]
    assert as_text.tolist() == ["007", "7", "7.0"]


def test_huge_and_malformed_ids_are_set_aside_with_the_rule_not_a_traceback():
    raw = pd.DataFrame({"transaction_id": ["99999999999999999999999", "", "a\tb", "x|y",
                                           "9" * 10_000, "5"],
                        "event_timestamp": ["2024-01-01"] * 6, "customer_id": [1] * 6,
                        "terminal_id": [1] * 6, "amount": [1.0] * 6})
    norm = schema.normalize_transactions(raw)
    assert norm.rows["transaction_id"].tolist() == [5]
    summary = norm.reject_summary()
    assert summary["bad transaction_id: outside the 64-bit integer range"] == 1
    assert sum(summary.values()) == 5
    text = schema.normalize_transactions(raw, ALL_STRING)
    assert sorted(text.rows["transaction_id"]) == ["5", "99999999999999999999999"]
    assert text.reject_summary() == {
        "bad transaction_id: ids are 1-128 characters of A-Z a-z 0-9 _ . : @ / + = -": 4}


def test_labels_with_integer_ids_find_their_string_transactions():
    tx = schema.normalize_transactions(pd.DataFrame({
        "transaction_id": ["124", "125"], "event_timestamp": ["2024-01-01"] * 2,
        "customer_id": ["a", "b"], "terminal_id": ["t", "t"], "amount": [1.0, 2.0]}),
        ALL_STRING).rows
    labels = pd.DataFrame({"transaction_id": [124, 125.0], "is_fraud": [1, 0],
                           "label_timestamp": ["2024-01-02"] * 2})
    norm = schema.normalize_labels(labels, tx, ALL_STRING)
    assert norm.n_rejected == 0 and norm.rows["transaction_id"].tolist() == ["124", "125"]


def test_vectorized_and_per_value_paths_agree():
    rng = np.random.default_rng(0)
    values = pd.Series(rng.integers(0, 10**6, 5000))
    for kind in (INT, STRING):
        fast, fast_why = canonical_series(values, kind)
        slow, slow_why = canonical_series(values.astype(object).where(values > -1), kind)
        assert fast.astype(str).tolist() == slow.astype(str).tolist()
        assert fast_why.isna().all() and slow_why.isna().all()
    text = pd.Series(["a", "b|c", None, "ok-1", ""])
    canon, why = canonical_series(text, STRING)
    assert canon.isna().tolist() == [False, True, True, False, True]
    assert why.notna().tolist() == [False, True, False, False, True]


def test_a_store_written_with_text_ids_is_refused_when_ints_are_declared():
    stored = pd.DataFrame({"transaction_id": [1], "customer_id": ["c-1"], "terminal_id": [2]})
    with pytest.raises(InputError, match=r"customer_id value\(s\) refused.*ids.customer_id is int"):
        schema.stored_ids(stored, INTS, "the offline store's transactions")
    assert schema.stored_ids(stored, ALL_STRING, "x")["transaction_id"].tolist() == ["1"]


def test_declared_types_come_from_config_and_are_checked(tmp_path):
    p = tmp_path / "ffs.yaml"
    p.write_text("ids:\n  customer_id: string\n")
    cfg = load_config(p, env={})
    assert cfg.ids.types() == IdTypes(INT, (("customer_id", STRING),))
    assert cfg.ids.types().of("customer_id") == STRING
    assert cfg.ids.types().of("terminal_id") == INT  # not declared: the default
    env = load_config(None, env={"FFS_IDS_TERMINAL_ID": "string"})
    assert env.ids.keys == {"terminal_id": STRING}
    # a join key the config does not name takes the repo's Entity type
    assert env.ids.types().with_keys({"device_id": STRING}).of("device_id") == STRING
    assert env.ids.types().with_keys({"terminal_id": INT}).of("terminal_id") == STRING
    p.write_text("ids:\n  customer_id: uuid\n")
    with pytest.raises(ConfigError, match="ids.customer_id = 'uuid': must be one of int, string"):
        load_config(p, env={})
    assert Config().ids.types() == INTS
