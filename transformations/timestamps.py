"""The one place that converts timestamps.

Inside the engines, time is int64 seconds since the Unix epoch, UTC. Input timestamps may be
naive (read as UTC), timezone-aware (converted to UTC), strings or epoch numbers; sub-second
parts are floored, so "correct to the second" means exactly that: an event at 12:00:00.7
belongs to second 12:00:00, online and offline alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SECOND = 1
MINUTE = 60
HOUR = 3600
DAY = 86400


EPOCH_UNIT_LIMITS = (1e11, 1e14, 1e17)  # below: seconds, ms, us; above: ns
_PER_SECOND = (1, 1_000, 1_000_000)


def per_second(value: float) -> int:
    """Units per second of one epoch number, read from its own magnitude (the rule of
    epoch_seconds, for single values: the stream's messages, request times)."""
    return next((per for limit, per in zip(EPOCH_UNIT_LIMITS, _PER_SECOND, strict=True)
                 if abs(value) < limit), 1_000_000_000)
# The one range of event and request times on every path (batch, stream, producer, HTTP,
# client): from the Unix epoch to the last second pandas' nanosecond timestamps (the offline
# store, training sets) can hold. Live events also obey the stream's max_future_s.
MIN_S = 0
MAX_S = 9_223_372_036  # 2262-04-11T23:47:16Z
RANGE_TEXT = "supported: 1970-01-01 to 2262-04-11"


def in_range(seconds: int) -> bool:
    return MIN_S <= seconds <= MAX_S


def epoch_seconds(values: pd.Series) -> pd.Series:
    """Whole epoch seconds (float, NaN where missing) of numbers in any epoch unit, each
    value's unit read from its own magnitude; integers are divided exactly."""
    if pd.api.types.is_integer_dtype(values) and not values.isna().any():
        v = values.to_numpy(dtype=np.int64)
        a = np.abs(v)
        per = np.select([a < lim for lim in EPOCH_UNIT_LIMITS], [1, 1000, 10**6],
                        default=10**9)
        return pd.Series((v // per).astype("float64"), index=values.index)
    v = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    a = np.abs(v)
    per = np.select([a < lim for lim in EPOCH_UNIT_LIMITS], [1.0, 1e3, 1e6], default=1e9)
    return pd.Series(np.floor(v / per), index=values.index)


def to_utc(values: pd.Series) -> pd.Series:
    """Parse to datetime64[ns, UTC] floored to the second; unparseable values become NaT."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        # Epoch numbers, each by its own magnitude (the rule the stream's messages follow):
        # seconds below 1e11, then milliseconds, microseconds, nanoseconds. Each value, not
        # the column's largest: one millisecond value used to turn every other row's seconds
        # into milliseconds, i.e. 1970, silently. Unambiguous for 1973-5138.
        out = pd.to_datetime(epoch_seconds(values), unit="s", utc=True, errors="coerce")
    else:
        out = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return out.dt.floor("s").astype("datetime64[ns, UTC]")


def to_seconds(values: pd.Series) -> np.ndarray:
    """UTC datetimes (no NaT) to int64 epoch seconds."""
    ts = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
    return ts.dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)


def from_seconds(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


def weekday(seconds: np.ndarray) -> np.ndarray:
    """Monday=0 .. Sunday=6; 1970-01-01 was a Thursday (3)."""
    return (seconds // DAY + 3) % 7


def hour(seconds: np.ndarray) -> np.ndarray:
    return (seconds % DAY) // HOUR


def parse_iso(text: str):
    """ISO 8601 text to a datetime, naive meaning UTC. Python before 3.11 refuses the 'Z'
    suffix that this project itself writes (bus/messages.py), so it is read as +00:00 here,
    the one place every path parses single timestamps. ValueError when not ISO 8601."""
    import datetime as dt

    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(text)
    return d if d.tzinfo is not None else d.replace(tzinfo=dt.timezone.utc)
