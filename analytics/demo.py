"""The last step of `ffs demo`: the enriched topic of the live stream into the embedded OLAP
store (DuckDB) and into a live Apache Pinot, every analyst query on both (same rows, or the
differences printed), and the dashboard served with its link printed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from ffs.config import Config


def start_pinot(log: Callable[[str], None]):
    """A LocalPinot starting in a background thread (about 10 s), so that its start overlaps
    the stream step; .result() is the running cluster."""
    from concurrent.futures import ThreadPoolExecutor

    from ffs.analytics.pinot_cluster import LocalPinot

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pinot-start")
    future = pool.submit(LocalPinot(log=lambda line: log(f"  {line}")).start)
    pool.shutdown(wait=False)
    return future


def pinot_answers(cfg: Config, pinot, duck, log: Callable[[str], None],
                  timeout_s: float = 90.0) -> None:
    """Apply the generated tables to the demo's Pinot, wait until it holds what DuckDB
    holds, then run every analyst query on both at the same `now`."""
    from ffs.analytics.compare import differences
    from ffs.analytics.dashboard import PinotBackend
    from ffs.analytics.pinot_apply import apply
    from ffs.analytics.pinot_config import write_artifacts
    from ffs.analytics.queries import QUERIES

    cfg.pinot.controller_url, cfg.pinot.broker_url = pinot.controller_url, pinot.broker_url
    out = Path(cfg.offline.path).parent / "pinot"
    write_artifacts(out, cfg)
    apply(cfg, out, lambda _line: None)
    backend = PinotBackend(cfg)
    want = duck.store.count()
    t0 = time.monotonic()
    have = 0
    while time.monotonic() - t0 < timeout_s:
        df = backend.client.query("SELECT COUNT(*) AS n FROM ffs_enriched")
        have = int(df["n"].iloc[0]) if len(df) else 0
        if have >= want:
            break
        time.sleep(0.5)
    log(f"  Pinot {pinot.broker_url}: tables applied, {have:,} of {want:,} rows consumed from "
        f"Kafka in {time.monotonic() - t0:.1f} s")
    same = 0
    for name in QUERIES:
        d, now = duck.run(name, {})
        q0 = time.perf_counter()
        pdf, _ = backend.run(name, {"now_ms": now})
        ms = (time.perf_counter() - q0) * 1000
        diff = differences(d, pdf)
        same += not diff
        log(f"  {name:<24} {len(pdf):>4} rows in {ms:5.1f} ms on Pinot: "
            + ("same rows as DuckDB" if not diff else "DIFFERENT: " + "; ".join(diff)))
    log(f"  Pinot and DuckDB agree on {same} of {len(QUERIES)} analyst queries")


def serve_dashboard(cfg: Config, log: Callable[[str], None], started: float,
                    linger_s: float | None, pinot=None) -> None:
    from ffs.analytics.dashboard import DuckDBBackend, start_dashboard
    from ffs.analytics.queries import QUERIES

    path = Path(cfg.offline.path).parent / "analytics.duckdb"
    for stale in (path, path.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)  # offsets of a previous demo's broker mean nothing now
    cfg.analytics.store, cfg.analytics.duckdb_path = "duckdb", str(path)
    backend = DuckDBBackend(cfg)
    url, stop = start_dashboard(cfg, port=0, backend=backend)
    try:
        t0, last, steady = time.monotonic(), -1, time.monotonic()
        while time.monotonic() - t0 < 60:  # until the row count stops moving
            rows = backend.store.count()
            if rows != last:
                last, steady = rows, time.monotonic()
            elif rows and time.monotonic() - steady > 1.5:
                break
            time.sleep(0.25)
        h = backend.health()
        log(f"  {h['rows']:,} enriched rows queryable in DuckDB ({path})")
        for name in QUERIES:
            q0 = time.perf_counter()
            df, _now = backend.run(name, {})
            log(f"  {name:<24} {len(df):>4} rows in {(time.perf_counter() - q0) * 1000:5.1f} ms"
                + (f"   top: {_top(df)}" if len(df) else ""))
        if pinot is not None:
            pinot_answers(cfg, pinot, backend, log)
        log(f"demo done in {time.perf_counter() - started:.0f} s.")
        log(f"dashboard: {url}   (refreshes every {cfg.analytics.refresh_s} s)")
        if linger_s is None:
            linger_s = float("inf") if sys.stdin.isatty() else 0.0
        if linger_s > 0:
            log("  Ctrl-C to stop" if linger_s == float("inf") else
                f"  up for {linger_s:.0f} s")
            try:
                end = time.monotonic() + linger_s
                while time.monotonic() < end:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    finally:
        stop()


def _top(df) -> str:
    row = df.iloc[0]
    return ", ".join(f"{k}={_short(v)}" for k, v in list(row.items())[:3])


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
