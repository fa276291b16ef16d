"""Synthetic card traffic with known fraud: transactions plus late-arriving fraud labels.

The world: customers and terminals live on a 100x100 grid. Each customer has a spending
profile (typical amount, spread, payments per day) and shops at a fixed set of terminals near
home; every payment carries its terminal's coordinates (terminal_x, terminal_y, grid units).
Payments follow a day/night rhythm. Four fraud scenarios are mixed in, each a pattern a feature
store should make visible:

1. compromised terminal: every payment at that terminal is fraud for a few days
   (skimmer installed; a per-terminal fraud-rate window catches it);
2. compromised card: for a week or two, about a third of the card's payments are fraud at
   several times the customer's usual amount (an amount-vs-history feature catches it);
3. card testing: a burst of 3-8 tiny payments (0.50-3.00) within a few minutes on one card,
   each at a different random terminal (short-window counts catch it);
4. stolen card far from home: for 2-5 days, about half of the card's payments happen at
   terminals more than 30 grid units from the customer's home, each one the card has never
   used before. They replace the card's genuine payments, so amounts come from the
   customer's own distribution at the customer's own pace: amount-vs-history and velocity
   features see nothing, while distance from the previous terminal, the implied speed and
   "first time at this terminal" do.

Labels are their own events: every fraudulent payment gets a chargeback label (is_fraud=1)
after a random delay, and a random sample of genuine payments gets a "confirmed genuine" label
(is_fraud=0) after a delay from the same range. Labels that would arrive after the end of the
generated period have not arrived yet and are left out, so fraud in the last days is
under-labelled exactly as it is in production. The labels file is ordered by label_timestamp.

Generation runs day by day with vectorised NumPy and a random stream per day, so memory is
bounded by one day's payments (plus the customer/terminal tables, labels still in transit and
the (card, terminal) pairs of scenario 3 and 4 payments, 8 bytes each, that keep scenario 4's
terminals new to the card), and the same spec gives the same data whether kept in memory or
written to Parquet or CSV.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ffs.errors import InputError
from ffs.transformations.timestamps import DAY, HOUR

GRID = 100.0
RADIUS = 5.0  # a customer shops within this distance of home
MAX_TERMINALS_PER_CUSTOMER = 40  # people use a few dozen shops, however dense the city
AMOUNT_MEAN = (5.0, 100.0)
AMOUNT_CV = (0.2, 0.6)  # std / mean
TX_PER_DAY = (0.2, 4.0)

# Relative share of payments by hour of day (UTC is the local time of this synthetic world).
HOUR_WEIGHTS = np.array([0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.5, 3.0, 4.5, 5.0, 5.5, 6.0,
                         7.0, 6.5, 5.5, 5.5, 6.0, 6.5, 6.5, 5.5, 4.5, 3.5, 2.0, 1.0])
HOUR_P = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()

# Fraud rates are per entity per day, so the fraud share stays near 1% at any size.
TERMINAL_COMPROMISE_RATE = 1 / 2500
TERMINAL_COMPROMISE_DAYS = (3, 10)
CARD_COMPROMISE_RATE = 1 / 1000
CARD_COMPROMISE_DAYS = (7, 14)
CARD_FRAUD_SHARE = 1 / 3
CARD_FRAUD_MULTIPLIER = (3.0, 7.0)
BURST_RATE = 1 / 2000
BURST_SIZE = (3, 8)
BURST_GAP_SECONDS = (5, 60)
BURST_AMOUNT = (0.5, 3.0)
BURST_MAX_SPAN = (BURST_SIZE[1] - 1) * BURST_GAP_SECONDS[1]
STOLEN_CARD_RATE = 1 / 800
STOLEN_CARD_DAYS = (2, 5)
STOLEN_SHARE = 1 / 2
FAR = 30.0  # a stolen card's terminals are farther than this from home (> RADIUS by far)
FAR_TRIES = 20  # draws per payment; with no new far terminal (a tiny world) it stays genuine
SCENARIOS = (1, 2, 3, 4)

ROW_GROUP_ROWS = 1 << 20
FORMATS = ("parquet", "csv")

# Parquet gets microsecond timestamps: Spark cannot read nanosecond ones.
TX_SCHEMA = pa.schema([
    ("transaction_id", pa.int64()),
    ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("customer_id", pa.int64()),
    ("terminal_id", pa.int64()),
    ("terminal_x", pa.float64()),
    ("terminal_y", pa.float64()),
    ("amount", pa.float64()),
    ("tx_fraud", pa.int64()),
    ("fraud_scenario", pa.int64()),
])
LABEL_SCHEMA = pa.schema([
    ("transaction_id", pa.int64()),
    ("is_fraud", pa.int64()),
    ("label_timestamp", pa.timestamp("us", tz="UTC")),
])
TIME_COLUMNS = ("event_timestamp", "label_timestamp")


@dataclass(frozen=True)
class GenerateSpec:
    customers: int = 2000
    terminals: int = 4000
    days: int = 60
    start: str = "2026-01-01"  # UTC date
    seed: int = 7
    label_delay_days: tuple[int, int] = (1, 30)
    genuine_label_rate: float = 0.05
    fmt: str = "parquet"  # or "csv"


@dataclass
class GenerateSummary:
    transactions_path: Path
    labels_path: Path
    n_transactions: int
    n_labels: int
    n_fraud: int
    fraud_by_scenario: dict[int, int]
    start: str
    end: str  # exclusive: the data covers [start, end)
    seconds: float


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check(spec: GenerateSpec) -> dt.date:
    """Validate the spec; return the start date."""
    for name in ("customers", "terminals", "days"):
        v = getattr(spec, name)
        if not _is_int(v) or v < 1:
            raise InputError(f"{name} must be a whole number >= 1, got {v!r}")
    if not _is_int(spec.seed) or spec.seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {spec.seed!r}")
    delay = spec.label_delay_days
    if (not isinstance(delay, (tuple, list)) or len(delay) != 2
            or not all(_is_int(d) for d in delay) or not 0 <= delay[0] <= delay[1]):
        raise InputError(f"label_delay_days must be two whole numbers (min, max) with "
                         f"0 <= min <= max, got {delay!r}")
    rate = spec.genuine_label_rate
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise InputError(f"genuine_label_rate must be between 0 and 1, got {rate!r}")
    if spec.fmt not in FORMATS:
        raise InputError(f"fmt must be one of {list(FORMATS)}, got {spec.fmt!r}")
    try:
        return dt.date.fromisoformat(str(spec.start))
    except ValueError:
        raise InputError(f"start must be a date like 2026-01-01, got {spec.start!r}") from None


def _customer_terminals(cust_xy: np.ndarray, term_xy: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists: customer i shops at terminals[offsets[i]:offsets[i+1]].

    Up to MAX_TERMINALS_PER_CUSTOMER random terminals within RADIUS; the nearest terminal
    when none is that close. Terminals are bucketed in RADIUS-sized cells, so a customer only
    looks at the 3x3 cells around home; where those hold many terminals it looks at a random
    sample of them, so the cost grows with customers, not customers x terminals.
    """
    side = int(np.ceil(GRID / RADIUS))
    per_row = 4 * MAX_TERMINALS_PER_CUSTOMER  # about a third of a 3x3 block is within RADIUS

    def buckets(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cell = np.minimum((xy // RADIUS).astype(np.int64), side - 1)
        key = cell[:, 0] * side + cell[:, 1]
        order = np.argsort(key, kind="stable")
        return order, np.searchsorted(key[order], np.arange(side * side + 1))

    t_order, t_start = buckets(term_xy)
    c_order, c_start = buckets(cust_xy)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # customers, counts, terminals
    for cx in range(side):
        for cy in range(side):
            custs = c_order[c_start[cx * side + cy]:c_start[cx * side + cy + 1]]
            cand = np.concatenate([
                t_order[t_start[nx * side + ny]:t_start[nx * side + ny + 1]]
                for nx in range(max(cx - 1, 0), min(cx + 2, side))
                for ny in range(max(cy - 1, 0), min(cy + 2, side))
            ])
            if len(custs) == 0 or len(cand) == 0:
                continue
            sparse = len(cand) <= per_row
            width = len(cand) if sparse else per_row
            step = max(1, 1_000_000 // width)
            for i in range(0, len(custs), step):
                chunk = custs[i:i + step]
                if sparse:  # every candidate, in a random order per customer
                    pos = rng.permuted(np.broadcast_to(np.arange(width), (len(chunk), width)),
                                       axis=1)
                else:
                    pos = rng.integers(0, len(cand), (len(chunk), width))
                term = cand[pos]
                ok = ((cust_xy[chunk, None, :] - term_xy[term]) ** 2).sum(axis=2) <= RADIUS ** 2
                if not sparse:
                    ok &= ~_repeated(pos)
                ok &= np.cumsum(ok, axis=1) <= MAX_TERMINALS_PER_CUSTOMER
                parts.append((chunk, ok.sum(axis=1), term[ok]))

    n_cust = len(cust_xy)
    counts = np.zeros(n_cust, np.int64)
    for chunk, n, _ in parts:
        counts[chunk] = n
    lonely = np.flatnonzero(counts == 0)
    step = max(1, 1_000_000 // len(term_xy))
    for i in range(0, len(lonely), step):
        chunk = lonely[i:i + step]
        d2 = ((cust_xy[chunk, None, :] - term_xy[None, :, :]) ** 2).sum(axis=2)
        parts.append((chunk, np.ones(len(chunk), np.int64), d2.argmin(axis=1)))
        counts[chunk] = 1

    offsets = np.concatenate([[0], np.cumsum(counts)])
    terminals = np.empty(offsets[-1], np.int32)  # int32 halves the largest table at scale
    for chunk, n, term in parts:
        row_start = np.repeat(offsets[chunk] - (np.cumsum(n) - n), n)
        terminals[row_start + np.arange(len(term))] = term
    return offsets, terminals


def _repeated(values: np.ndarray) -> np.ndarray:
    """Per row, True where a value already occurred earlier in that row."""
    order = np.argsort(values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    dup = np.zeros(values.shape, bool)
    dup[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    out = np.empty_like(dup)
    np.put_along_axis(out, order, dup, axis=1)
    return out


class _World:
    """Customers, terminals and the fraud state carried from one day to the next."""

    def __init__(self, spec: GenerateSpec):
        rng = np.random.default_rng([spec.seed, 0])
        c, t = spec.customers, spec.terminals
        self.cust_xy = cust_xy = rng.uniform(0, GRID, (c, 2))
        self.term_xy = term_xy = rng.uniform(0, GRID, (t, 2))
        mean = rng.uniform(*AMOUNT_MEAN, c)
        cv = rng.uniform(*AMOUNT_CV, c)
        # Log-normal amounts: positive and right-skewed like real spending, with this mean/std.
        self.sigma = np.sqrt(np.log1p(cv ** 2))
        self.mu = np.log(mean) - self.sigma ** 2 / 2
        self.rate = rng.uniform(*TX_PER_DAY, c)
        self.offsets, self.terminals = _customer_terminals(cust_xy, term_xy, rng)
        self.n_terminals_of = np.diff(self.offsets)
        # Day index until which (exclusive) a terminal / card is in fraudsters' hands.
        self.terminal_until = np.zeros(t, np.int64)
        self.card_until = np.zeros(c, np.int64)
        self.stolen_until = np.zeros(c, np.int64)
        # Sorted keys card * terminals + terminal of the payments outside the card's own set
        # (scenarios 3 and 4), so a stolen card's terminals are always new to it.
        self.foreign = np.empty(0, np.int64)

    def seen(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.foreign, keys)
        hit = np.zeros(len(keys), bool)
        inside = pos < len(self.foreign)
        hit[inside] = self.foreign[pos[inside]] == keys[inside]
        return hit

    def remember(self, keys: np.ndarray) -> None:
        new = np.unique(keys)
        new = new[~self.seen(new)]
        self.foreign = np.insert(self.foreign, np.searchsorted(self.foreign, new), new)


def _far_terminals(world: _World, cust: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per payment of `cust`: a terminal farther than FAR from home that the card has never
    used (nor been given earlier in this call), or -1 when FAR_TRIES draws found none."""
    n_term = len(world.term_xy)
    out = np.full(len(cust), -1, np.int64)
    todo = np.arange(len(cust))
    for _ in range(FAR_TRIES):
        if len(todo) == 0:
            break
        c = cust[todo]
        cand = rng.integers(0, n_term, len(todo))
        far = ((world.term_xy[cand] - world.cust_xy[c]) ** 2).sum(axis=1) > FAR ** 2
        # Own terminals are within RADIUS of home, except a lonely customer's nearest one.
        own = (world.n_terminals_of[c] == 1) & (world.terminals[world.offsets[c]] == cand)
        keys = c * n_term + cand
        ok = np.flatnonzero(far & ~own & ~world.seen(keys))
        unique_keys, first = np.unique(keys[ok], return_index=True)  # one card, one draw twice
        took = ok[first]
        out[todo[took]] = cand[took]
        world.remember(unique_keys)
        todo = np.delete(todo, took)
    return out


def _compromise(rng: np.random.Generator, until: np.ndarray, rate: float,
                days: tuple[int, int], day: int) -> None:
    n = min(int(rng.poisson(rate * len(until))), len(until))
    hit = rng.choice(len(until), n, replace=False)
    until[hit] = np.maximum(until[hit], day + rng.integers(days[0], days[1] + 1, n))


def _day(world: _World, spec: GenerateSpec, day: int, day_start: int) -> dict[str, np.ndarray]:
    """One day's payments, sorted by time, without transaction ids yet."""
    rng = np.random.default_rng([spec.seed, 1, day])
    cust = np.repeat(np.arange(spec.customers), rng.poisson(world.rate))
    n = len(cust)
    seconds = rng.choice(24, n, p=HOUR_P) * HOUR + rng.integers(0, HOUR, n)
    pick = (rng.random(n) * world.n_terminals_of[cust]).astype(np.int64)
    term = world.terminals[world.offsets[cust] + pick].astype(np.int64)
    amount = rng.lognormal(world.mu[cust], world.sigma[cust])
    scenario = np.zeros(n, np.int64)

    _compromise(rng, world.terminal_until, TERMINAL_COMPROMISE_RATE,
                TERMINAL_COMPROMISE_DAYS, day)
    scenario[world.terminal_until[term] > day] = 1

    _compromise(rng, world.card_until, CARD_COMPROMISE_RATE, CARD_COMPROMISE_DAYS, day)
    card = (world.card_until[cust] > day) & (rng.random(n) < CARD_FRAUD_SHARE) & (scenario == 0)
    amount[card] *= rng.uniform(*CARD_FRAUD_MULTIPLIER, int(card.sum()))
    scenario[card] = 2

    n_bursts = int(rng.poisson(BURST_RATE * spec.customers))
    sizes = rng.integers(BURST_SIZE[0], BURST_SIZE[1] + 1, n_bursts)
    m = int(sizes.sum())
    burst_of = np.repeat(np.arange(n_bursts), sizes)
    first = np.cumsum(sizes) - sizes
    gaps = rng.integers(*BURST_GAP_SECONDS, m, endpoint=True)
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    since_start = elapsed - np.repeat(elapsed[first], sizes)
    # Bursts start early enough to end the same day, so ids stay increasing with time.
    b_start = rng.integers(0, DAY - BURST_MAX_SPAN, n_bursts)
    b_cust = rng.integers(0, spec.customers, n_bursts)[burst_of]
    b_term = rng.integers(0, spec.terminals, m)
    b_amount = rng.uniform(*BURST_AMOUNT, m)
    world.remember(b_cust * spec.terminals + b_term)

    # Scenario 4 draws from its own stream and only takes payments still genuine, so the other
    # scenarios' payments are the same as without it.
    rng4 = np.random.default_rng([spec.seed, 3, day])
    _compromise(rng4, world.stolen_until, STOLEN_CARD_RATE, STOLEN_CARD_DAYS, day)
    away = np.flatnonzero((world.stolen_until[cust] > day) & (rng4.random(n) < STOLEN_SHARE)
                          & (scenario == 0))
    far = _far_terminals(world, cust[away], rng4)
    away, far = away[far >= 0], far[far >= 0]
    term[away] = far
    scenario[away] = 4

    seconds = np.concatenate([seconds, b_start[burst_of] + since_start])
    term = np.concatenate([term, b_term])
    order = np.argsort(seconds, kind="stable")
    return {
        "event_timestamp": (seconds + day_start)[order],
        "customer_id": np.concatenate([cust, b_cust])[order],
        "terminal_id": term[order],
        "terminal_x": world.term_xy[term[order], 0],
        "terminal_y": world.term_xy[term[order], 1],
        "amount": np.round(np.concatenate([amount, b_amount]), 2)[order],
        "fraud_scenario": np.concatenate([scenario, np.full(m, 3, np.int64)])[order],
    }


def _chunks(spec: GenerateSpec) -> Iterator[tuple[int, dict, dict]]:
    """Yield (day, transactions, labels that have arrived by the end of that day's window)."""
    start = _check(spec)
    start_s = (start - dt.date(1970, 1, 1)).days * DAY
    end_s = start_s + spec.days * DAY
    lo, hi = (d * DAY for d in spec.label_delay_days)
    world = _World(spec)
    next_id = 0
    pending = {"transaction_id": np.empty(0, np.int64), "is_fraud": np.empty(0, np.int64),
               "label_timestamp": np.empty(0, np.int64)}
    for day in range(spec.days):
        tx = _day(world, spec, day, start_s + day * DAY)
        n = len(tx["amount"])
        tx = {"transaction_id": np.arange(next_id, next_id + n, dtype=np.int64), **tx,
              "tx_fraud": (tx["fraud_scenario"] > 0).astype(np.int64)}
        next_id += n

        rng = np.random.default_rng([spec.seed, 2, day])
        labelled = (tx["tx_fraud"] == 1) | (rng.random(n) < spec.genuine_label_rate)
        k = int(labelled.sum())
        new = {"transaction_id": tx["transaction_id"][labelled],
               "is_fraud": tx["tx_fraud"][labelled],
               "label_timestamp": tx["event_timestamp"][labelled]
               + rng.integers(lo, hi, k, endpoint=True)}
        pending = {c: np.concatenate([pending[c], new[c]]) for c in pending}
        # Later days' labels come at least `lo` after the next day starts, so everything
        # before that is final and can be written in label_timestamp order. Labels due after
        # the period have not arrived yet: they stay pending and are never written.
        due = pending["label_timestamp"] < min(start_s + (day + 1) * DAY + lo, end_s)
        order = np.lexsort((pending["transaction_id"][due], pending["label_timestamp"][due]))
        ready = {c: v[due][order] for c, v in pending.items()}
        pending = {c: v[~due] for c, v in pending.items()}
        yield day, tx, ready


def _frame(cols: dict[str, np.ndarray], schema: pa.Schema) -> pd.DataFrame:
    out = {}
    for name in schema.names:
        v = cols[name]
        out[name] = pd.to_datetime(v, unit="s", utc=True) if name in TIME_COLUMNS else v
    return pd.DataFrame(out)


def _table(cols: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    arrays = [pa.array(cols[f.name] * 1_000_000 if f.name in TIME_COLUMNS else cols[f.name],
                       f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def generate_frames(spec: GenerateSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transactions, labels) in memory; for small sizes (tests, notebooks)."""
    txs, labels = [], []
    for _, tx, ready in _chunks(spec):
        txs.append(tx)
        labels.append(ready)
    return _frame(_concat(txs), TX_SCHEMA), _frame(_concat(labels), LABEL_SCHEMA)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


class _Sink:
    """Incremental writer to a temporary name, renamed into place only when complete."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self.path, self.schema, self.fmt = path, schema, fmt
        self.tmp = path.with_name(f".{path.name}.partial")
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0
        self.done = False
        if fmt == "csv":
            # Whole-second CSV timestamps read back as "2026-01-01 00:00:00Z".
            self.csv_schema = pa.schema([
                f.with_type(pa.timestamp("s", tz="UTC")) if f.name in TIME_COLUMNS else f
                for f in schema])
            self.writer = pacsv.CSVWriter(str(self.tmp), self.csv_schema)
        else:
            self.writer = pq.ParquetWriter(str(self.tmp), schema)

    def write(self, cols: dict[str, np.ndarray]) -> None:
        table = _table(cols, self.schema)
        self.rows += table.num_rows
        if self.fmt == "csv":
            self.writer.write_table(table.cast(self.csv_schema))
            return
        # Many small days are gathered into large row groups, which readers handle better.
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.buffered:
            self.writer.write_table(pa.concat_tables(self.buffer), row_group_size=ROW_GROUP_ROWS)
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        if self.fmt == "parquet":
            self.flush()
        self.writer.close()
        os.replace(self.tmp, self.path)
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        try:
            self.writer.close()
        except Exception:  # already failing; the original error is the one to report
            pass
        self.tmp.unlink(missing_ok=True)


def generate_to(out_dir: Path, spec: GenerateSpec,
                progress: Callable[[str], None] | None = None) -> GenerateSummary:
    """Write out_dir/transactions.<fmt> and out_dir/labels.<fmt>, one day at a time.

    Same rows as generate_frames(spec). Parquet timestamps are stored in microseconds
    (pandas reads them as datetime64[us, UTC]); CSV ones as "2026-01-01 00:00:00Z".
    """
    began = time.perf_counter()
    start = _check(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tx_sink = _Sink(out_dir / f"transactions.{spec.fmt}", TX_SCHEMA, spec.fmt)
    label_sink = _Sink(out_dir / f"labels.{spec.fmt}", LABEL_SCHEMA, spec.fmt)
    by_scenario = dict.fromkeys(SCENARIOS, 0)
    try:
        for day, tx, ready in _chunks(spec):
            tx_sink.write(tx)
            label_sink.write(ready)
            counts = np.bincount(tx["fraud_scenario"], minlength=max(SCENARIOS) + 1)
            for s in by_scenario:
                by_scenario[s] += int(counts[s])
            if progress is not None:
                progress(f"day {day + 1}/{spec.days}: {len(tx['amount']):,} transactions")
        tx_sink.close()
        label_sink.close()
    except BaseException:
        tx_sink.abort()
        label_sink.abort()
        raise
    return GenerateSummary(
        transactions_path=tx_sink.path, labels_path=label_sink.path,
        n_transactions=tx_sink.rows, n_labels=label_sink.rows,
        n_fraud=sum(by_scenario.values()), fraud_by_scenario=by_scenario,
        start=start.isoformat(), end=(start + dt.timedelta(days=spec.days)).isoformat(),
        seconds=round(time.perf_counter() - began, 3),
    )
