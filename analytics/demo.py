"""The last step of `ffs demo`: the enriched topic of the live stream into the embedded OLAP
store (DuckDB), every analyst query once, and the dashboard served with its link printed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from ffs.config import Config


def serve_dashboard(cfg: Config, log: Callable[[str], None], started: float,
                    linger_s: float | None) -> None:
    from analytics.dashboard import DuckDBBackend, start_dashboard
    from analytics.queries import QUERIES

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
