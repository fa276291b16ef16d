"""Bus message parsing: a corpus of bad events with the stable reason code each must get, every
accepted shape of a good event parsed to exact values, and dead-letter records that keep the
refused value (as text, or base64 when it is not UTF-8)."""

from __future__ import annotations

import base64
import functools
import json

import pytest

from ffs.bus import messages as M
from ffs.transformations.ids import ALL_STRING

# these messages carry text ids ("t-1", "c1"): read with every id column declared string
parse_transaction = functools.partial(M.parse_transaction, id_types=ALL_STRING)
parse_label = functools.partial(M.parse_label, id_types=ALL_STRING)

T0 = 1710074096  # 2024-03-10T12:34:56Z

TX = {"transaction_id": "t-1", "customer_id": "c1", "terminal_id": "m9",
      "event_timestamp": "2024-03-10T12:34:56Z", "amount": 12.5}
LABEL = {"transaction_id": "t-1", "is_fraud": 1, "label_timestamp": "2024-03-17T12:34:56Z"}


def _raw(obj) -> bytes:
    return json.dumps(obj).encode()


def _tx(**changes) -> bytes:
    d = dict(TX)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return _raw(d)


def _label(**changes) -> bytes:
    d = dict(LABEL)
    for k, v in changes.items():
        if v is _DROP:
            d.pop(k)
        else:
            d[k] = v
    return _raw(d)


_DROP = object()


def _with_literal(field: str, literal: str, base: dict = TX) -> bytes:
    """A message whose `field` is written as a raw JSON literal (NaN, 1e999, ...)."""
    d = dict(base)
    d[field] = "@@"
    return json.dumps(d).replace('"@@"', literal).encode()


def _tx_of(txid, customer, terminal, t, amount) -> M.Transaction:
    """The shipped repo's transaction (its columns: customer_id, terminal_id, amount)."""
    return M.Transaction.of(txid, t, {"customer_id": customer, "terminal_id": terminal,
                                      "amount": amount})


def _reason(parse, raw) -> str:
    with pytest.raises(M.Refused) as info:
        parse(raw)
    assert info.value.reason in M.REASONS
    assert info.value.detail  # always says why
    return info.value.reason


# ---- not JSON / not an object / too large ---------------------------------------------------

BAD_ANY = [
    ("garbage bytes", b"\x00\x01garbage\x7f", M.NOT_JSON),
    ("truncated json", _raw(TX)[:-7], M.NOT_JSON),
    ("empty", b"", M.NOT_JSON),
    ("none value", None, M.NOT_JSON),
    ("invalid utf-8", b'{"transaction_id": "t\xff\xfe1"}', M.NOT_JSON),
    ("invalid utf-8 alone", b"\xff\xfe\xfd", M.NOT_JSON),
    ("list", b"[1, 2, 3]", M.NOT_OBJECT),
    ("number", b"42", M.NOT_OBJECT),
    ("string", b'"a transaction"', M.NOT_OBJECT),
    ("null literal", b"null", M.NOT_OBJECT),
    ("too large", _raw({**TX, "pad": "x" * (M.MAX_MESSAGE_BYTES + 1)}), M.TOO_LARGE),
    ("too large garbage", b"\xff" * (M.MAX_MESSAGE_BYTES + 1), M.TOO_LARGE),
]


@pytest.mark.parametrize("raw,reason", [(r, why) for _, r, why in BAD_ANY],
                         ids=[name for name, _, _ in BAD_ANY])
@pytest.mark.parametrize("parse", [parse_transaction, parse_label],
                         ids=["transaction", "label"])
def test_unparseable_messages(parse, raw, reason):
    assert _reason(parse, raw) == reason


def test_size_limit_is_inclusive():
    pad = M.MAX_MESSAGE_BYTES - len(_raw({**TX, "pad": ""}))
    exact = _raw({**TX, "pad": "x" * pad})
    assert len(exact) == M.MAX_MESSAGE_BYTES
    assert parse_transaction(exact).transaction_id == "t-1"
    over = _raw({**TX, "pad": "x" * (pad + 1)})
    assert _reason(parse_transaction, over) == M.TOO_LARGE


# ---- transactions ----------------------------------------------------------------------------

BAD_TX = [
    # missing (absent or null)
    *[(f"missing {f}", _tx(**{f: _DROP}), M.MISSING_FIELD) for f in TX],
    *[(f"null {f}", _tx(**{f: None}), M.MISSING_FIELD) for f in TX],
    # mistyped
    ("amount as text", _tx(amount="12.5"), M.BAD_TYPE),
    ("amount as NaN text", _tx(amount="NaN"), M.BAD_TYPE),
    ("amount as bool", _tx(amount=True), M.BAD_TYPE),
    ("amount as list", _tx(amount=[1]), M.BAD_TYPE),
    ("amount as dict", _tx(amount={"v": 1}), M.BAD_TYPE),
    ("txid as fractional float", _tx(transaction_id=1.5), M.BAD_ID),
    ("txid as list", _tx(transaction_id=["t1"]), M.BAD_TYPE),
    ("customer as dict", _tx(customer_id={"id": 1}), M.BAD_TYPE),
    ("customer as bool", _tx(customer_id=True), M.BAD_TYPE),
    ("terminal as fractional float", _tx(terminal_id=3.5), M.BAD_ID),
    ("terminal as bool", _tx(terminal_id=False), M.BAD_TYPE),
    ("timestamp as bool", _tx(event_timestamp=True), M.BAD_TYPE),
    ("timestamp as list", _tx(event_timestamp=[2024, 3, 10]), M.BAD_TYPE),
    ("timestamp as dict", _tx(event_timestamp={"s": T0}), M.BAD_TYPE),
    # JSON literals orjson refuses
    ("NaN literal amount", _with_literal("amount", "NaN"), M.NOT_JSON),
    ("Infinity literal amount", _with_literal("amount", "Infinity"), M.NOT_JSON),
    ("1e400 amount", _with_literal("amount", "1e400"), M.NOT_JSON),
    ("1e999 amount", _with_literal("amount", "1e999"), M.NOT_JSON),
    ("-1e999 amount", _with_literal("amount", "-1e999"), M.NOT_JSON),
    # bad amounts
    ("negative amount", _tx(amount=-0.01), M.BAD_AMOUNT),
    ("negative int amount", _tx(amount=-5), M.BAD_AMOUNT),
    ("huge amount", _tx(amount=1e300), M.BAD_AMOUNT),
    # bad ids
    ("empty txid", _tx(transaction_id=""), M.BAD_ID),
    ("pipe in customer", _tx(customer_id="c|1"), M.BAD_ID),
    ("tab in terminal", _tx(terminal_id="m\t9"), M.BAD_ID),
    ("space in txid", _tx(transaction_id="t 1"), M.BAD_ID),
    ("brace in customer", _tx(customer_id="{c1}"), M.BAD_ID),
    ("newline in txid", _tx(transaction_id="t1\n"), M.BAD_ID),
    ("non-ascii terminal", _tx(terminal_id="m\u00e9"), M.BAD_ID),
    ("129 chars", _tx(transaction_id="x" * 129), M.BAD_ID),
    # bad timestamps
    ("not iso", _tx(event_timestamp="yesterday"), M.BAD_TIMESTAMP),
    ("bad month", _tx(event_timestamp="2024-13-01T00:00:00Z"), M.BAD_TIMESTAMP),
    ("empty timestamp", _tx(event_timestamp=""), M.BAD_TIMESTAMP),
    ("negative epoch", _tx(event_timestamp=-1), M.BAD_TIMESTAMP),
    ("negative float epoch", _tx(event_timestamp=-0.5), M.BAD_TIMESTAMP),
    ("epoch nanoseconds past 2262", _tx(event_timestamp=1e19), M.BAD_TIMESTAMP),
    ("ISO before 1970", _tx(event_timestamp="1969-12-31T23:59:59Z"), M.BAD_TIMESTAMP),
]


@pytest.mark.parametrize("raw,reason", [(r, why) for _, r, why in BAD_TX],
                         ids=[name for name, _, _ in BAD_TX])
def test_bad_transactions(raw, reason):
    assert _reason(parse_transaction, raw) == reason


def test_the_missing_field_is_named():
    for f in TX:
        with pytest.raises(M.Refused) as info:
            parse_transaction(_tx(**{f: _DROP}))
        assert repr(f) in info.value.detail


def test_128_character_ids_are_accepted():
    tx = parse_transaction(_tx(transaction_id="x" * 128))
    assert tx.transaction_id == "x" * 128


GOOD_TIMES = [
    ("iso Z", "2024-03-10T12:34:56Z", T0),
    ("iso +00:00", "2024-03-10T12:34:56+00:00", T0),
    ("iso +02:00", "2024-03-10T12:34:56+02:00", T0 - 2 * 3600),
    ("iso -05:30", "2024-03-10T12:34:56-05:30", T0 + 5 * 3600 + 1800),
    ("iso naive is utc", "2024-03-10T12:34:56", T0),
    ("iso space separator", "2024-03-10 12:34:56", T0),
    ("iso fraction truncates", "2024-03-10T12:34:56.999Z", T0),
    ("iso date only", "2024-03-10", T0 - (12 * 3600 + 34 * 60 + 56)),
    ("epoch s", T0, T0),
    ("epoch s float", T0 + 0.75, T0),
    ("epoch ms", T0 * 1000 + 999, T0),
    ("epoch us", T0 * 1_000_000 + 999_999, T0),
    ("epoch 0", 0, 0),
]


@pytest.mark.parametrize("value,expected", [(v, e) for _, v, e in GOOD_TIMES],
                         ids=[name for name, _, _ in GOOD_TIMES])
def test_accepted_timestamps(value, expected):
    tx = parse_transaction(_tx(event_timestamp=value))
    assert type(tx.t) is int
    assert tx.t == expected
    lab = parse_label(_label(label_timestamp=value))
    assert lab.label_t == expected


def test_good_transaction_values():
    tx = parse_transaction(_raw({"transaction_id": 123, "customer_id": 0,
                                   "terminal_id": "T:9/a+b=c@d_e.f-g",
                                   "event_timestamp": T0 * 1000, "amount": 7,
                                   "extra": {"ignored": True}}))
    assert tx == _tx_of("123", "0", "T:9/a+b=c@d_e.f-g", T0, 7.0)
    # then the udf's is_night (12:34 UTC: 0) and the absent coordinates (optional: None)
    assert tx.columns == (("customer_id", "0"), ("terminal_id", "T:9/a+b=c@d_e.f-g"),
                          ("amount", 7.0), ("is_night", 0.0), ("terminal_x", None),
                          ("terminal_y", None))
    assert type(tx.get("amount")) is float
    assert parse_transaction(_tx(amount=0)).get("amount") == 0.0
    assert parse_transaction(_tx(amount=1e9)).get("amount") == 1e9  # the limit itself
    # text input is accepted as well as bytes
    assert parse_transaction(_raw(TX).decode()) == _tx_of("t-1", "c1", "m9", T0, 12.5)


def test_transaction_views_for_the_writer_the_client_and_the_bus():
    tx = _tx_of("t-9", "c2", "m3", T0, 0.1)
    rest = {"is_night": 0.0, "terminal_x": None, "terminal_y": None}
    assert tx.event() == {"transaction_id": "t-9", "t": T0, "customer_id": "c2",
                          "terminal_id": "m3", "amount": 0.1, **rest}
    assert tx.row() == {"transaction_id": "t-9", "event_timestamp": T0, "customer_id": "c2",
                        "terminal_id": "m3", "amount": 0.1, **rest}
    assert M.Transaction.from_event(tx.event()) == tx
    assert M.Transaction.of(9, T0, {"customer_id": 2, "terminal_id": 3, "amount": 1,
                                    "terminal_x": 4, "other": "x"}).columns == \
        (("customer_id", "2"), ("terminal_id", "3"), ("amount", 1.0), ("is_night", 0.0),
         ("terminal_x", 4.0), ("terminal_y", None))
    # the derived column is the udf's on every path: 03:00 UTC is night
    assert M.Transaction.of(9, T0 - 9 * 3600, {"customer_id": 2, "terminal_id": 3,
                                               "amount": 1}).get("is_night") == 1.0
    assert tx.key() == "c2" == M.message_key({"customer_id": "c2"})  # the first entity's key
    assert len({tx, _tx_of("t-9", "c2", "m3", T0, 0.1)}) == 1  # hashable, by value
    with pytest.raises(KeyError, match="no column 'merchant_id'"):
        tx.get("merchant_id")


def test_a_bad_column_is_named_in_the_detail():
    for field, value, reason in (("customer_id", "c|1", M.BAD_ID),
                                 ("terminal_id", 3.5, M.BAD_ID),
                                 ("amount", -1, M.BAD_AMOUNT)):
        with pytest.raises(M.Refused) as info:
            parse_transaction(_tx(**{field: value}))
        assert info.value.reason == reason and repr(field) in info.value.detail


def test_outgoing_messages_round_trip():
    tx = _tx_of("t-9", "c2", "m3", T0, 0.1)
    assert parse_transaction(M.transaction_message(tx)) == tx
    # a derived column is not sent (every path computes it); optional ones are, null or not
    assert "is_night" not in json.loads(M.transaction_message(tx))
    located = M.Transaction.of("t-8", T0, {"customer_id": "c2", "terminal_id": "m3",
                                           "amount": 1, "terminal_x": -3.5, "terminal_y": 7})
    assert parse_transaction(M.transaction_message(located)) == located


def test_optional_and_derived_columns_refuse_bad_values_by_name():
    for value, reason in (("12", M.BAD_TYPE), (True, M.BAD_TYPE), (1e10, M.BAD_AMOUNT)):
        with pytest.raises(M.Refused) as info:
            parse_transaction(_tx(terminal_x=value))
        assert info.value.reason == reason and "'terminal_x'" in info.value.detail
    assert parse_transaction(_tx(terminal_x=None)).get("terminal_x") is None
    assert parse_transaction(_tx(terminal_x=-12.25)).get("terminal_x") == -12.25
    lab = M.Label("t-9", 0, T0 + 86400)
    assert parse_label(M.label_message(lab)) == lab


def test_enriched_transaction_writes_undefined_values_as_null():
    tx = _tx_of("t-9", "c2", "m3", T0, 0.1)
    row = json.loads(M.enriched_transaction(
        tx, {"amount": 99.0, "customer_avg_amount_1d": float("nan"), "customer_nb_tx_1d": 3},
        processed_at_ms=5))
    assert row == {"kind": "transaction", "transaction_id": "t-9", "customer_id": "c2",
                   "terminal_id": "m3", "event_time_ms": T0 * 1000, "amount": 0.1,
                   "is_night": 0.0, "terminal_x": None, "terminal_y": None,
                   "customer_avg_amount_1d": None, "customer_nb_tx_1d": 3,
                   "processed_at_ms": 5}


# ---- labels ----------------------------------------------------------------------------------

BAD_LABELS = [
    *[(f"missing {f}", _label(**{f: _DROP}), M.MISSING_FIELD) for f in LABEL],
    *[(f"null {f}", _label(**{f: None}), M.MISSING_FIELD) for f in LABEL],
    ("is_fraud 2", _label(is_fraud=2), M.BAD_TYPE),
    ("is_fraud -1", _label(is_fraud=-1), M.BAD_TYPE),
    ("is_fraud text 1", _label(is_fraud="1"), M.BAD_TYPE),
    ("is_fraud 0.5", _label(is_fraud=0.5), M.BAD_TYPE),
    ("is_fraud 1.0", _label(is_fraud=1.0), M.BAD_TYPE),
    ("is_fraud list", _label(is_fraud=[1]), M.BAD_TYPE),
    ("txid as fractional float", _label(transaction_id=2.5), M.BAD_ID),
    ("txid as bool", _label(transaction_id=True), M.BAD_TYPE),
    ("txid with pipe", _label(transaction_id="a|b"), M.BAD_ID),
    ("label time as bool", _label(label_timestamp=False), M.BAD_TYPE),
    ("label time as list", _label(label_timestamp=[]), M.BAD_TYPE),
    ("label time not iso", _label(label_timestamp="10/03/2024"), M.BAD_TIMESTAMP),
    ("label time negative", _label(label_timestamp=-86400), M.BAD_TIMESTAMP),
]


@pytest.mark.parametrize("raw,reason", [(r, why) for _, r, why in BAD_LABELS],
                         ids=[name for name, _, _ in BAD_LABELS])
def test_bad_labels(raw, reason):
    assert _reason(parse_label, raw) == reason


@pytest.mark.parametrize("flag,expected", [(0, 0), (1, 1), (True, 1), (False, 0)])
def test_accepted_label_flags(flag, expected):
    lab = parse_label(_label(is_fraud=flag))
    assert lab == M.Label("t-1", expected, T0 + 7 * 86400)
    assert type(lab.is_fraud) is int


def test_integer_label_ids():
    assert parse_label(_raw({"transaction_id": 77, "is_fraud": 0,
                               "label_timestamp": T0})) == M.Label("77", 0, T0)


# ---- dead letters ----------------------------------------------------------------------------

def test_dead_letter_keeps_text_values():
    value = _tx(amount="12.5")
    key, body = M.dead_letter(M.BAD_TYPE, "amount is text", "ffs.transactions", 3, 1234,
                              b"c1", value, 1_700_000_000_000, 1_700_000_000_500)
    assert key == b"ffs.transactions/3/1234"
    rec = json.loads(body)
    assert rec == {"reason": "bad_type", "detail": "amount is text",
                   "source_topic": "ffs.transactions", "partition": 3, "offset": 1234,
                   "key": "c1", "kafka_timestamp_ms": 1_700_000_000_000,
                   "dead_lettered_at_ms": 1_700_000_000_500, "value": value.decode()}
    assert rec["value"].encode() == value
    # the kept value fails again the same way: it can be re-examined later
    assert _reason(parse_transaction, rec["value"].encode()) == rec["reason"]


def test_dead_letter_keeps_binary_values_as_base64():
    value = b"\xff\x00garbage\xfe"
    _key, body = M.dead_letter(M.NOT_JSON, "bad", "ffs.labels", 0, 7, None, value, None, 1)
    rec = json.loads(body)
    assert "value" not in rec
    assert base64.b64decode(rec["value_base64"]) == value
    assert rec["key"] is None and rec["kafka_timestamp_ms"] is None


def test_dead_letter_of_a_null_value_and_a_binary_key():
    _key, body = M.dead_letter(M.NOT_JSON, "null", "ffs.labels", 1, 2, b"k\xff", None, 5, 6)
    rec = json.loads(body)
    assert rec["value"] == ""
    assert rec["key"] == "k\ufffd"


def test_dead_letter_of_an_oversize_value_is_cut_at_the_limit():
    value = _raw({**TX, "pad": "x" * (M.MAX_MESSAGE_BYTES * 2)})
    _key, body = M.dead_letter(M.TOO_LARGE, "big", "ffs.transactions", 0, 0, None, value, 0, 0)
    rec = json.loads(body)
    assert rec["value"].encode() == value[:M.MAX_MESSAGE_BYTES]


def test_every_dead_letter_record_is_valid_json_for_every_corpus_entry():
    for name, raw, reason in BAD_ANY + BAD_TX:
        _key, body = M.dead_letter(reason, "x", "t", 0, 0, None, raw, None, 0)
        rec = json.loads(body)
        kept = rec["value"].encode() if "value" in rec \
            else base64.b64decode(rec["value_base64"])
        assert kept == (raw or b"")[:M.MAX_MESSAGE_BYTES], name


# ---- another repo's columns ------------------------------------------------------------------

OTHER_REPO = r'''
import json
import pandas as pd
from ffs.bus import messages as M, replay
from ffs.transformations.features import ENTITIES
from ffs.transformations.ids import ALL_STRING
good = {"transaction_id": "p1", "account_id": "a1", "device_id": "d1", "ip": "10.0.0.1",
        "event_timestamp": 0, "amount": 3, "declined": 1, "channel": "online"}
out = {"columns": M.COLUMNS, "partition_keys": M.PARTITION_KEYS, "first": ENTITIES[0].keys,
       "good": good}
tx = M.parse_transaction(json.dumps(good), ALL_STRING)
out["parsed"] = [list(c) for c in tx.columns]
out["key"] = tx.key()
out["round_trip"] = M.parse_transaction(M.transaction_message(tx), ALL_STRING) == tx
frame = pd.DataFrame([{**good, "event_timestamp": pd.Timestamp(0, tz="UTC")}])
out["replayed"] = M.parse_transaction(replay.transaction_values(frame)[0], ALL_STRING) == tx
out["replay_key"] = replay.transaction_keys(frame).tolist()
out["enriched"] = list(json.loads(M.enriched_transaction(tx, {"f": 1}, 5)))
out["refused"] = {}
for field, value in (("channel", "on line"), ("channel", [1]), ("declined", -1),
                     ("ip", "a|b"), ("device_id", None), ("amount", "1")):
    try:
        M.parse_transaction(json.dumps({**good, field: value}), ALL_STRING)
    except M.Refused as exc:
        out["refused"][f"{field}={value!r}"] = [exc.reason, exc.detail]
print("RESULT " + json.dumps(out))
'''


def test_another_repos_columns_are_parsed_sent_and_keyed(tmp_path):
    """tests/fixtures/payments_repo: keys account_id, device_id, ip, value columns amount and
    declined (numbers) and channel (a text); messages are keyed by its first entity's key."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "payments_repo"
    shutil.copytree(root / "tests" / "fixtures" / "payments_repo", repo,
                    ignore=shutil.ignore_patterns(".ffs", "__pycache__"))
    run = subprocess.run([sys.executable, "-c", OTHER_REPO], cwd=root, capture_output=True,
                         text=True, timeout=300, env={**os.environ,
                                                      "FFS_FEATURES_REPO": str(repo)})
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert set(out["columns"]) == {"account_id", "device_id", "ip", "amount", "declined",
                                   "channel"}
    assert dict(out["parsed"]) == {"account_id": "a1", "device_id": "d1", "ip": "10.0.0.1",
                                   "amount": 3.0, "declined": 1.0, "channel": "online"}
    (first,) = out["partition_keys"]
    assert out["partition_keys"] == out["first"]
    assert out["key"] == out["good"][first] and out["replay_key"] == [out["good"][first]]
    assert out["round_trip"] and out["replayed"]
    assert out["enriched"][:2] == ["kind", "transaction_id"] and "channel" in out["enriched"]
    assert out["enriched"][-1] == "processed_at_ms"
    refused = out["refused"]
    assert len(refused) == 6
    assert refused["channel='on line'"][0] == M.BAD_ID and "'channel'" in \
        refused["channel='on line'"][1]
    assert refused["channel=[1]"][0] == M.BAD_TYPE
    assert refused["declined=-1"] == [M.BAD_AMOUNT, "'declined' = -1: must be finite and >= 0"]
    assert refused["ip='a|b'"][0] == M.BAD_ID and "'ip'" in refused["ip='a|b'"][1]
    assert refused["device_id=None"] == [M.MISSING_FIELD, "'device_id' is missing or null"]
    assert refused["amount='1'"][0] == M.BAD_TYPE
