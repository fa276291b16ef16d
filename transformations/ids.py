"""The id model: one declared type per id column, one canonical form, one validity rule, applied
by batch loading, the stream, online reads and training sets alike.

Each id column (the event's transaction_id, each entity's join key) is declared `int` or
`string`: by the repo's Entity value types and the config (`ids.<column>`, default `int`).
An id is then read the same way on every path:

- `int`: an integer in int64's range. Accepted as an integer, a whole float (7.0: a pandas
  column with gaps holds floats) up to 2**53 (larger floats are not exact), or decimal text
  ("7", "007", "+7", "7.0"): all of these are the id 7.
- `string`: text kept exactly as given ("007" and "7" are two ids). An integer is its decimal
  text (a producer that sends 124 means "124"); so is a whole float.

Either way the id's text (the integer's decimal form, or the string) must be 1-128 characters
of A-Z a-z 0-9 _ . : @ / + = - : ids become parts of Redis keys and of separated values, so no
spaces, tabs, '|', or braces (Redis Cluster hash tags). Booleans are never ids.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ffs.config import IdTypes

__all__ = ["ALL_STRING", "INT", "STRING", "TEXT", "BadId", "IdTypes", "canonical",
           "canonical_series", "key_text"]

INT, STRING = "int", "string"
KINDS = (INT, STRING)
MAX_LENGTH = 128
TEXT = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}")
_DECIMAL = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
_INT64 = (-(2**63), 2**63 - 1)
_EXACT_FLOAT = 2**53
RULE = f"1-{MAX_LENGTH} characters of A-Z a-z 0-9 _ . : @ / + = -"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class BadId(ValueError):
    """An id that the declared type or the validity rule refuses: str() shows the value and
    the rule, `rule` the rule alone (stable text to count refusals by)."""

    def __init__(self, value: object, rule: str):
        super().__init__(f"{_show(value)}: {rule}" if rule != "missing" else rule)
        self.rule = rule


ALL_STRING = IdTypes(STRING, default=STRING)


def types(cfg) -> IdTypes:
    """The id types this process reads ids by: the config's `ids`, and for each join key it
    does not name, the type the loaded repo's Entity declares (the compiler refuses the two
    disagreeing)."""
    from ffs.transformations.features import COMPILED

    return cfg.ids.types().with_keys(COMPILED.id_types)


def canonical(value: object, kind: str) -> int | str:
    """The id's canonical form under `kind`, or BadId. Missing values (None, NaN) are the
    caller's to report: they raise BadId too, saying "missing"."""
    # the common cases first: an int, or digits as text, for an int column (a bool is no
    # `int` here; 18 digits are always within int64)
    if kind != STRING:
        if type(value) is int and _INT64[0] <= value <= _INT64[1]:
            return value
        if type(value) is str and len(value) <= 18 and value.isascii() and value.isdigit():
            return int(value)
    if value is None or (isinstance(value, (float, np.floating)) and value != value):
        raise BadId(value, "missing")
    if isinstance(value, (bool, np.bool_)):
        raise BadId(value, "a boolean is not an id")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)):
        if not np.isfinite(value) or not float(value).is_integer():
            raise BadId(value, "only whole numbers are ids")
        if abs(float(value)) > _EXACT_FLOAT:
            raise BadId(value, "a float this large is not exact; send the id as an "
                        "integer or as text")
        number = int(value)
    elif isinstance(value, str):
        if len(value) > MAX_LENGTH:
            raise BadId(value, f"ids are {RULE}")
        if kind == STRING:
            if not TEXT.fullmatch(value):
                raise BadId(value, f"ids are {RULE}")
            return value
        if not _DECIMAL.fullmatch(value):
            raise BadId(value, "not an integer id (this id column is declared int; "
                        "declare it string in the config's ids section for text ids)")
        number = int(value.split(".")[0])
    else:
        raise BadId(value, "expected an integer or a string id, found "
                    f"{type(value).__name__}")
    if kind == STRING:
        text = str(number)  # text ids have no range, only TEXT's length
        if len(text) > MAX_LENGTH:
            raise BadId(value, f"ids are {RULE}")
        return text
    if not _INT64[0] <= number <= _INT64[1]:
        raise BadId(value, "outside the 64-bit integer range")
    return number


def key_text(value: int | str) -> str:
    """A canonical id as it appears in Redis keys and on the bus."""
    return str(value)


def canonical_series(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """(canonical ids, reasons): ids as int64 (nullable Int64 when some are refused or
    missing) or strings, with <NA> where an id is missing or refused; reasons hold BadId's text
    for refused ids and <NA> elsewhere. Whole columns of one type take a vectorized path."""
    if pd.api.types.is_bool_dtype(values):
        reasons = pd.Series("a boolean is not an id", index=values.index, dtype="string")
        return pd.Series(pd.NA, index=values.index, dtype="Int64" if kind == INT else "string"), \
            reasons.where(values.notna())
    if pd.api.types.is_integer_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        if str(values.dtype) == "uint64" and len(values) and values.max() > _INT64[1]:
            return _per_value(values, kind)
        out = values.astype("Int64" if values.hasnans else "int64")
        none = pd.Series(pd.NA, index=values.index, dtype="string")
        return (out if kind == INT else out.astype("string")), none
    if pd.api.types.is_float_dtype(values):
        v = values.to_numpy(dtype="float64", na_value=np.nan)
        ok = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) <= _EXACT_FLOAT)
        if ok.sum() == values.notna().sum():
            out = pd.Series(v, index=values.index).astype("Int64")
            none = pd.Series(pd.NA, index=values.index, dtype="string")
            return (out if kind == INT else out.astype("string")), none
        return _per_value(values, kind)
    if kind == STRING and pd.api.types.infer_dtype(values, skipna=True) == "string":
        text = values.astype("string")
        good = text.str.fullmatch(TEXT.pattern).fillna(False).astype(bool)
        reasons = pd.Series(pd.NA, index=values.index, dtype="string")
        bad = ~good & text.notna()
        if bad.any():
            reasons[bad] = f"ids are {RULE}"
        return text.where(good), reasons
    return _per_value(values, kind)


def _per_value(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    seen: dict[object, tuple[object, object]] = {}
    out, why = [], []
    for value in values.tolist():
        try:
            hit = seen.get(value)
        except TypeError:  # unhashable (a list in an object column)
            hit = None
        if hit is None:
            try:
                hit = (canonical(value, kind), pd.NA)
            except BadId as exc:
                hit = (pd.NA, pd.NA if exc.rule == "missing" else exc.rule)
            try:
                seen[value] = hit
            except TypeError:
                pass
        out.append(hit[0])
        why.append(hit[1])
    dtype = "Int64" if kind == INT else "string"
    return pd.Series(out, index=values.index, dtype=dtype), \
        pd.Series(why, index=values.index, dtype="string")
