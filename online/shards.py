"""Commands to a Redis Cluster, grouped by node: one pipeline per node per round trip.

In a cluster every key one command or script touches must hash to one slot (CROSSSLOT
otherwise), so the online paths (client, writer, loader) split their work into calls that
each touch one slot: one entity value's keys (hash-tagged, online/layout.py), or one
transaction index key. `Shards.run` sends a list of such calls, each with its slot, as one
pipeline per node that serves those slots, and gives back each call's reply or its error
(never raises for one node's failure): the caller decides per call, so a read answers
UNAVAILABLE for the values of a dead node and PRESENT for the others.

What the cluster client of redis-py does not do here, and why:
* redis-py's cluster pipeline refuses EVALSHA over keys of several slots and retries a
  failed node with backoff (seconds): a read must stay within its timeout, so failures are
  returned at once and the slot map is refreshed (CLUSTER SLOTS, at most once per
  REFRESH_S) before a later call, when a node failed or answered MOVED.
* scripts are sent by sha; a node that does not know one (a fresh node, a promoted replica
  whose cache was empty) answers NOSCRIPT, is sent the script once, and the calls retried.
The topology, the connection pools (password, TLS, timeouts) and key slots are redis-py's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["Shards", "is_cluster", "slot_of"]

REFRESH_S = 0.5  # at most one topology refresh per this, however many calls fail


def is_cluster(conn: Any) -> bool:
    """Whether `conn` is a cluster client (online/client.py redis_client, from the config's
    redis.cluster): decided once when a client, writer or loader is built, never per call."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - redis-py without cluster support
        return False
    return isinstance(conn, RedisCluster)


def slot_of(key: str | bytes) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode() if isinstance(key, str) else key)


class Shards:
    def __init__(self, cluster_conn):
        self.rc = cluster_conn
        self._scripts: dict[str, str] = {}  # sha -> text
        self._stale = False
        self._refreshed = 0.0

    def script(self, text: str) -> str:
        """Registers a script; returns the sha calls name it by."""
        sha = hashlib.sha1(text.encode()).hexdigest()
        self._scripts[sha] = text
        return sha

    def evalsha(self, sha: str, keys: Sequence[object], args: Sequence[object]) -> tuple:
        """A call's command: its keys must share one slot."""
        return ("EVALSHA", sha, len(keys), *keys, *args)

    def run(self, calls: Sequence[tuple[int, tuple]],
            wait_replicas_ms: int | None = None) -> list[Any]:
        """calls: (slot, command). Each call's reply, or the exception it met. With
        wait_replicas_ms, each node that has replicas is then asked to WAIT for one of them
        (a write acknowledged by a primary that dies before replicating it would be lost at
        failover); a node whose replica did not acknowledge fails all its calls."""
        self._refresh_if_stale()
        out: list[Any] = [None] * len(calls)
        groups: dict[str, tuple[Any, list[int]]] = {}
        nm = self.rc.nodes_manager
        for i, (slot, _cmd) in enumerate(calls):
            try:
                node = nm.get_node_from_slot(slot)
            except Exception as exc:  # SlotNotCoveredError: no primary for it right now
                out[i] = exc
                self._stale = True
                continue
            groups.setdefault(node.name, (node, []))[1].append(i)
        for node, idx in groups.values():
            replicas = 0
            if wait_replicas_ms is not None:
                replicas = len(nm.slots_cache.get(calls[idx[0]][0], ())) - 1
            self._run_node(node, [calls[i][1] for i in idx], idx, out,
                           wait_replicas_ms if replicas > 0 else None)
        return out

    def _run_node(self, node, cmds: list[tuple], idx: list[int], out: list[Any],
                  wait_ms: int | None) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import NoScriptError, RedisError, ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            conn = self.rc.get_redis_connection(node)
            replies = self._send(conn, cmds, wait_ms)
            missing = {c[1] for c, r in zip(cmds, replies, strict=False)
                       if isinstance(r, NoScriptError)}
            if missing:
                for sha in missing:
                    conn.script_load(self._scripts[sha])
                replies = self._send(conn, cmds, wait_ms)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._stale = True
            for i in idx:
                out[i] = exc
            return
        except RedisError as exc:
            for i in idx:
                out[i] = exc
            return
        if wait_ms is not None:
            acked = replies[-1]
            replies = replies[:-1]
            if not isinstance(acked, int) or acked < 1:
                from ffs.errors import TransientError

                err = TransientError(f"Redis node {node.name}: no replica acknowledged the "
                                     f"writes within {wait_ms} ms")
                replies = [err] * len(replies)
        for i, r in zip(idx, replies, strict=True):
            if isinstance(r, ResponseError) and str(r).startswith(("MOVED", "ASK", "TRYAGAIN",
                                                                   "CLUSTERDOWN")):
                self._stale = True
            out[i] = r

    @staticmethod
    def _send(conn, cmds: list[tuple], wait_ms: int | None) -> list[Any]:
        pipe = conn.pipeline(transaction=False)
        for c in cmds:
            pipe.execute_command(*c)
        if wait_ms is not None:
            pipe.execute_command("WAIT", 1, wait_ms)
        return pipe.execute(raise_on_error=False)

    def _refresh_if_stale(self) -> None:
        """After a failure, re-read the slot map (a replica may have taken over)."""
        if not self._stale or time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        try:
            self.rc.nodes_manager.initialize()
            self._stale = False
        except Exception:  # noqa: BLE001 - no node answered: keep the old map, retry later
            pass


def first_error(replies: Sequence[Any]) -> BaseException | None:
    return next((r for r in replies if isinstance(r, BaseException)), None)
