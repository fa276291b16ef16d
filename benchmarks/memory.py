"""Online memory per entity and per event, for whatever repo is loaded (FFS_FEATURES_REPO).

Generates random events of the repo's shape (its join keys, number and text columns), loads
them with `ffs materialize`'s loader into a private Redis, and reports per entity: its record
format (what each aggregation adds to an event's record), Redis `MEMORY USAGE` per entity
value and per event, the fraud sets, and how Redis encodes the sorted sets (a listpack, or
a skiplist once a member passes zset-max-listpack-value) with the longest member.

    .venv/bin/python -m benchmarks.memory                       # the shipped repo
    FFS_FEATURES_REPO=tests/fixtures/parity_repo .venv/bin/python -m benchmarks.memory
    .venv/bin/python -m benchmarks.memory --offline DIR         # an offline store's state

With --offline, the state is that store's transactions and labels, loaded as `ffs materialize`
loads them (the handbook's, once backfilled), instead of random events; every key is sized,
and Redis' used_memory before and after the load is reported too.
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


def offline_events(path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An offline store's transactions and labels, read as `ffs materialize` reads them."""
    from ffs.config import load_config
    from ffs.jobs.batch.offline_store import OfflineStore
    from ffs.transformations import ids as _ids
    from ffs.transformations import schema

    store = OfflineStore(path)
    ids = _ids.types(load_config())
    tx = schema.stored_ids(store.read("transactions", list(schema.TX_COLUMNS)), ids,
                           "the offline store's transactions")
    lab = (store.read("labels", list(schema.LABEL_COLUMNS)) if store.exists("labels")
           else pd.DataFrame(columns=list(schema.LABEL_COLUMNS)))
    return tx, schema.stored_ids(lab, ids, "the offline store's labels")


def sizes(conn, keys: list) -> list[int]:
    """MEMORY USAGE (exact: SAMPLES 0) of each key, pipelined."""
    out: list[int] = []
    for i in range(0, len(keys), 5000):
        pipe = conn.pipeline(transaction=False)
        for k in keys[i:i + 5000]:
            pipe.memory_usage(k, samples=0)
        out.extend(int(v or 0) for v in pipe.execute())
    return out


def encodings(conn, keys: list, sample: int = 1000) -> tuple[dict[str, int], int]:
    """How Redis encodes these sorted sets (listpack, or skiplist once a member is longer
    than zset-max-listpack-value, 64 bytes by default), and the longest member, over the
    first `sample` keys."""
    pipe = conn.pipeline(transaction=False)
    for k in keys[:sample]:
        pipe.object("encoding", k)
        pipe.zrange(k, 0, -1)
    got = pipe.execute()
    kinds: dict[str, int] = {}
    for kind in got[0::2]:
        name = kind.decode() if isinstance(kind, bytes) else str(kind)
        kinds[name] = kinds.get(name, 0) + 1
    longest = max((len(m) for ms in got[1::2] for m in ms), default=0)
    return kinds, longest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--values-per-key", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--offline", default=None,
                    help="load this offline store's transactions and labels (as `ffs "
                         "materialize` does) instead of random events")
    args = ap.parse_args()

    import redis

    from ffs.online import layout
    from ffs.online.loader import load_state
    from ffs.online.redis_server import RedisServer
    from ffs.transformations.features import ENTITIES, FEATURE_SERVICE, windows_for

    if args.offline:
        tx, labels = offline_events(args.offline)
    else:
        tx, labels = random_events(args.events, args.values_per_key, args.seed)
    out: dict[str, object] = {"service": FEATURE_SERVICE, "events": len(tx), "entities": {}}
    if args.offline:
        out["offline"] = args.offline
    with RedisServer() as server:
        conn = redis.Redis.from_url(server.url)
        empty = int(conn.info("memory")["used_memory"])
        summary = load_state(conn, tx, labels, index_transactions=True)
        out["used_memory_bytes"] = int(conn.info("memory")["used_memory"]) - empty
        out["keys"] = int(conn.dbsize())
        out["transactions_indexed"] = summary.transactions_indexed
        for e in ENTITIES:
            fmt = layout.record_format(e)
            ev = list(conn.scan_iter(match=f"ffs:{{{e.name}:*}}:ev", count=5000))
            fr = list(conn.scan_iter(match=f"ffs:{{{e.name}:*}}:fraud", count=5000))
            ev_bytes = sum(sizes(conn, ev))
            fr_bytes = sum(sizes(conn, fr))
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
            kinds, longest = encodings(conn, ev)
            out["entities"][e.name].update(  # type: ignore[index]
                {"encodings_of_1000": kinds, "longest_member_bytes": longest})
        idx = list(conn.scan_iter(match="ffs:x:*", count=5000))[:2000]
        out["index_bytes_per_transaction"] = round(
            sum(sizes(conn, idx)) / max(len(idx), 1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
