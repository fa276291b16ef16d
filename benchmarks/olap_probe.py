"""A separate process for benchmarks/stream.py: the embedded analytics store consuming the
enriched topic, recording per row when it became queryable and its lag from the event's
publish time (enriched rows carry it). In its own process, as in production, so it does not
compete with the stream job for one interpreter lock.

    python -m benchmarks.olap_probe BOOTSTRAP OUT.json   (SIGTERM: write OUT and exit)
"""

from __future__ import annotations

import collections
import json
import signal
import sys
import threading
import time


def main() -> int:
    from ffs.analytics.olap_store import OlapStore
    from ffs.config import load_config

    cfg = load_config(env={})
    cfg.kafka.bootstrap_servers = sys.argv[1]
    store = OlapStore(cfg.kafka, ":memory:")
    store.lags_ms = collections.deque()  # unbounded: the benchmark reads them all
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    visible, lags = [], []
    while not stop.is_set():
        before = len(store.lags_ms)
        n = store.poll_once()
        now = time.time() * 1000
        new = list(store.lags_ms)[before:]
        visible += [now] * len(new)
        lags += new
        if not n:
            time.sleep(0.02)
    with open(sys.argv[2], "w") as f:
        json.dump({"visible_ms": visible, "lag_ms": lags}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
