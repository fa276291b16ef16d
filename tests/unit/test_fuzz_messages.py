"""A bounded fuzz pass of the bus's message parsers (issue 10): random bytes, mutated valid
messages and random JSON values. Every input must become an event or a Refused with one of
the known reasons, never another exception (which would crash a micro-batch), and whatever
is accepted must obey the input rules."""

from __future__ import annotations

import functools
import json
import math
import random

import pytest

from ffs.bus import messages as M
from ffs.transformations.ids import ALL_STRING, TEXT
from ffs.transformations.schema import MAX_AMOUNT

# these messages carry text ids ("t-1", "c1"): read with every id column declared string
parse_transaction = functools.partial(M.parse_transaction, id_types=ALL_STRING)
parse_label = functools.partial(M.parse_label, id_types=ALL_STRING)

VALID_TX = {"transaction_id": "t-1", "customer_id": "c1", "terminal_id": "m9",
            "event_timestamp": "2024-03-01T10:00:00Z", "amount": 12.5}
VALID_LABEL = {"transaction_id": "t-1", "is_fraud": 1, "label_timestamp": "2024-03-08T08:00:00Z"}
ODD = [None, True, False, 0, -1, 1e308, -1e308, 2**63, -(2**64), 1.5, "", " ", "0", "NaN",
       "2024-13-45", "2024-03-01T10:00:00+25:00", "9" * 400, "a|b", "c 1", "{x}", [], {}, [1],
       {"a": 1}, "\u0000", "\ud7ff", "Z", 1e11, 1e14, 1e17, 1e20, float("inf"), -0.0]


def _value(rng: random.Random):
    pick = rng.random()
    if pick < 0.5:
        return rng.choice(ODD)
    if pick < 0.7:
        return rng.uniform(-1e13, 1e13)
    if pick < 0.9:
        return "".join(rng.choice("azAZ09-:T.+Z|{} \t\"\\") for _ in range(rng.randint(0, 30)))
    return rng.randint(-(2**70), 2**70)


def _mutated(rng: random.Random, base: dict) -> bytes:
    obj = dict(base)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(list(obj) + ["extra"])
        action = rng.random()
        if action < 0.2:
            obj.pop(key, None)
        else:
            obj[key] = _value(rng)
    try:
        return json.dumps(obj, allow_nan=True).encode()
    except (TypeError, ValueError):
        return repr(obj).encode()


def _raw(rng: random.Random) -> bytes:
    n = rng.randint(0, 200)
    return bytes(rng.getrandbits(8) for _ in range(n))


def _check_tx(tx: M.Transaction) -> None:
    for v in (tx.transaction_id, tx.get("customer_id"), tx.get("terminal_id")):
        assert TEXT.fullmatch(v), v
    amount = tx.get("amount")
    assert math.isfinite(amount) and 0 <= amount <= MAX_AMOUNT
    assert isinstance(tx.t, int) and tx.t >= 0


@pytest.mark.parametrize("seed", range(4))
def test_the_parsers_accept_or_refuse_with_a_reason_never_crash(seed):
    rng = random.Random(seed)
    accepted = refused = 0
    for i in range(3000):
        kind = i % 4
        raw = (_raw(rng) if kind == 0 else _mutated(rng, VALID_TX) if kind == 1
               else _mutated(rng, VALID_LABEL) if kind == 2
               else json.dumps(_value(rng), allow_nan=True).encode())
        parse = parse_label if kind == 2 else parse_transaction
        try:
            event = parse(raw)
        except M.Refused as exc:
            assert exc.reason in M.REASONS, exc.reason
            refused += 1
            continue
        accepted += 1
        if isinstance(event, M.Transaction):
            _check_tx(event)
        else:
            assert event.is_fraud in (0, 1) and TEXT.fullmatch(event.transaction_id)
    assert accepted > 100 and refused > 1000  # the fuzz reached both sides


VALID_REQUEST = {"feature_service": "fraud_detection_v1",
                 "entities": {"customer_id": [42, 7], "terminal_id": [7, 8]},
                 "request_data": {"transaction_id": [991, None],
                                  "event_timestamp": ["2024-03-01T10:00:00Z", 1709287200],
                                  "amount": [12.5, None]},
                 "as_of": "2024-03-02T00:00:00Z"}


def _mutated_request(rng: random.Random) -> bytes:
    req = json.loads(json.dumps(VALID_REQUEST))
    for _ in range(rng.randint(1, 3)):
        places = [req] + [v for v in (req.get("entities"), req.get("request_data"))
                          if isinstance(v, dict)]
        where = rng.choice(places)
        key = rng.choice(list(where) + ["extra"])
        roll = rng.random()
        if roll < 0.2:
            where.pop(key, None)
        elif roll < 0.6 and isinstance(where.get(key), list) and where[key]:
            where[key][rng.randrange(len(where[key]))] = _value(rng)
        else:
            where[key] = _value(rng) if roll < 0.9 else [_value(rng) for _ in range(3)]
    try:
        return json.dumps(req, allow_nan=True).encode()
    except (TypeError, ValueError):
        return repr(req).encode()


@pytest.mark.parametrize("seed", range(3))
def test_the_http_request_parser_answers_4xx_or_rows_never_crashes(seed):
    from ffs.online.server import BadRequest, parse_request

    rng = random.Random(100 + seed)
    ok = bad = 0
    for i in range(2000):
        body = _raw(rng) if i % 5 == 0 else _mutated_request(rng)
        try:
            rows, _as_of, entities, _service = parse_request(body, max_batch=1000)
        except BadRequest as exc:
            assert 400 <= exc.status < 500 and str(exc), body
            bad += 1
            continue
        ok += 1
        assert len(rows) == len(entities["customer_id"]) == len(entities["terminal_id"])
        for row in rows:
            a = row.get("amount")
            assert a is None or (math.isfinite(a) and 0 <= a <= MAX_AMOUNT)
    assert ok > 50 and bad > 500
