"""Online memory per entity and per event, for whatever repo is loaded (FFS_FEATURES_REPO).

Generates random events of the repo's shape (its join keys, number and text columns), loads
them with `ffs materialize`'s loader into a private Redis, and reports per entity: its record
format (what each aggregation adds to an event's record), Redis `MEMORY USAGE` per entity
value and per event, and the fraud sets.

    .venv/bin/python -m benchmarks.memory                       # the shipped repo
    FFS_FEATURES_REPO=tests/fixtures/parity_repo .venv/bin/python -m benchmarks.memory
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd


def random_events(n: int, values_per_key: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ffs.transformations.features import KEY_COLUMNS, VALUE_COLUMNS

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01", tz="UTC")
    tx = pd.DataFrame({"transaction_id": [f"tx{i:09d}" for i in range(n)],
                       "event_timestamp": t0 + pd.to_timedelta(
                           np.sort(rng.integers(0, 30 * 86400, n)), unit="s")})
    for k in KEY_COLUMNS:
        tx[k] = [f"{k[:3]}{v}" for v in rng.integers(0, values_per_key, n)]
    for c, kind in VALUE_COLUMNS.items():
        tx[c] = (np.round(rng.gamma(2.0, 30.0, n), 2) if kind == "number"
                 else [f"v{v}" for v in rng.integers(0, 20, n)])
    picked = rng.random(n) < 0.02
    labels = pd.DataFrame({"transaction_id": tx["transaction_id"][picked].to_numpy(),
                           "is_fraud": 1,
                           "label_timestamp": tx["event_timestamp"][picked].to_numpy()})
    return tx, labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--values-per-key", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    import redis

    from ffs.online import layout
    from ffs.online.loader import load_state
    from ffs.online.redis_server import RedisServer
    from ffs.transformations.features import ENTITIES, FEATURE_SERVICE, windows_for

    tx, labels = random_events(args.events, args.values_per_key, args.seed)
    out: dict[str, object] = {"service": FEATURE_SERVICE, "events": len(tx), "entities": {}}
    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        summary = load_state(conn, tx, labels, index_transactions=True)
        for e in ENTITIES:
            fmt = layout.record_format(e)
            ev = list(conn.scan_iter(match=f"ffs:{{{e.name}:*}}:ev", count=5000))
            fr = list(conn.scan_iter(match=f"ffs:{{{e.name}:*}}:fraud", count=5000))
            ev_bytes = sum(conn.memory_usage(k, samples=0) or 0 for k in ev)
            fr_bytes = sum(conn.memory_usage(k, samples=0) or 0 for k in fr)
            events = summary.events[e.name]
            out["entities"][e.name] = {  # type: ignore[index]
                "aggregations": sorted({w.agg.value for w in windows_for(e)}),
                "record": {"cumulative": list(fmt.cumulative), "squares": list(fmt.squares),
                           "numbers": list(fmt.numbers), "texts": list(fmt.texts),
                           "fixed_bytes": fmt.fixed_size},
                "values": len(ev), "events": events,
                "bytes_per_value": round(ev_bytes / max(len(ev), 1)),
                "bytes_per_event": round(ev_bytes / max(events, 1), 1),
                "fraud_set_bytes_per_value": round(fr_bytes / max(len(fr), 1)) if fr else 0,
            }
        idx = list(conn.scan_iter(match="ffs:x:*", count=5000))[:2000]
        out["index_bytes_per_transaction"] = round(
            sum(conn.memory_usage(k, samples=0) or 0 for k in idx) / max(len(idx), 1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
