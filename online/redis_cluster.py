"""Start and stop a private Redis Cluster on free ports (tests, benchmarks).

    with RedisCluster(primaries=3, replicas=1) as cluster:   # 6 redis-server processes
        cfg.redis.url, cfg.redis.cluster = cluster.url, True
        cluster.kill_primary_of(slot)                         # SIGKILL, as a crash
        cluster.wait_ok()                                     # a replica took over

Each node is an online/redis_server.py RedisServer started with `--cluster-enabled yes`, in
its own directory. The cluster is built with CLUSTER ADDSLOTSRANGE / MEET / REPLICATE, not
`redis-cli --cluster create`, because that refuses fewer than 3 primaries and the benchmark
runs 1, 2 and 3. `cluster-require-full-coverage no`: while one shard is down the others keep
serving their slots (the setting this project recommends in production too: a feature store
that answers for 2/3 of the entities beats one that answers for none).
"""

from __future__ import annotations

import time
from pathlib import Path

from ffs.errors import TerminalError, TransientError
from ffs.online.redis_server import RedisServer, free_port

__all__ = ["RedisCluster", "SLOTS"]

SLOTS = 16384


class RedisCluster:
    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 password: str | None = None, directory: Path | None = None):
        if primaries < 1 or replicas < 0:
            raise TerminalError(f"a cluster needs >= 1 primary and >= 0 replicas per primary, "
                                f"got {primaries} and {replicas}")
        self.n_primaries, self.n_replicas = primaries, replicas
        self.node_timeout_ms, self.password = node_timeout_ms, password
        opts: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-require-full-coverage", "no",
                # a replica may take over however long it was cut off (tests kill primaries)
                "--cluster-replica-validity-factor", "0")
        if password:
            opts += ("--masterauth", password)
        self._opts, self._directory = opts, directory
        self.nodes: list[RedisServer] = []
        self.bus_ports: list[int] = []
        self._make_nodes()

    def _make_nodes(self) -> None:
        # the cluster bus on a free port of its own (the default, port + 10000, may be taken
        # or past 65535)
        n = self.n_primaries * (1 + self.n_replicas)
        self.bus_ports = [free_port() for _ in range(n)]
        self.nodes = [RedisServer(password=self.password,
                                  extra_args=(*self._opts, "--cluster-port",
                                              str(self.bus_ports[i])),
                                  directory=None if self._directory is None else
                                  Path(self._directory) / f"node{i}")
                      for i in range(n)]

    @property
    def url(self) -> str:
        """A seed node: a cluster client discovers the others from it."""
        alive = [n for n in self.nodes if n.proc is not None]
        return (alive or self.nodes)[0].url

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def _conn(self, node: RedisServer):
        import redis

        return redis.Redis(host="127.0.0.1", port=node.port, password=self.password,
                           socket_timeout=5, decode_responses=True)

    def start(self, timeout: float = 30.0, attempts: int = 2) -> RedisCluster:
        """Starts every node and builds the cluster; on a failure (a free port taken by
        another process between choosing and binding it, a slow machine), once more on
        fresh ports."""
        for attempt in range(attempts):
            try:
                for n in self.nodes:
                    n.start()
                self._build(timeout)
                return self
            except Exception:
                self.stop()
                if attempt == attempts - 1 or self._directory is not None:
                    raise
                self._make_nodes()
        return self

    def _build(self, timeout: float) -> None:
        conns = [self._conn(n) for n in self.nodes]
        ids = [c.execute_command("CLUSTER", "MYID") for c in conns]
        for i, c in enumerate(conns):
            c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        step = SLOTS // self.n_primaries
        for i in range(self.n_primaries):
            lo, hi = i * step, SLOTS - 1 if i == self.n_primaries - 1 else (i + 1) * step - 1
            conns[i].execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for n, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            conns[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port, bus)
        deadline = time.monotonic() + timeout
        while not all(len(c.execute_command("CLUSTER", "NODES").splitlines()) == len(conns)
                      for c in conns):
            self._wait(deadline, "every node to know every other")
        for r in range(self.n_replicas):
            for i in range(self.n_primaries):
                conns[self.n_primaries * (1 + r) + i].execute_command("CLUSTER", "REPLICATE",
                                                                      ids[i])
        self.wait_ok(timeout)
        for c in conns:
            c.close()

    def _wait(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise TransientError(f"local Redis Cluster on ports {self.ports}: timed out "
                                 f"waiting for {what}")
        time.sleep(0.05)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok, every slot has a live primary and
        each live replica's link to its primary is up."""
        deadline = time.monotonic() + timeout
        while not self._ok():
            self._wait(deadline, "cluster_state:ok")

    def _ok(self) -> bool:
        try:
            for n in self.nodes:
                if n.proc is None:
                    continue
                c = self._conn(n)
                try:
                    info = c.execute_command("CLUSTER", "INFO")
                    if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                        return False
                    rep = c.info("replication")
                    if rep.get("role") == "slave" and rep.get("master_link_status") != "up":
                        return False
                finally:
                    c.close()
            return True
        except Exception:  # a node still starting or just killed: not ok yet
            return False

    def primaries(self) -> list[RedisServer]:
        """The live nodes that serve slots now (after a failover, a former replica)."""
        out = []
        for n in self.nodes:
            if n.proc is None:
                continue
            c = self._conn(n)
            try:
                if c.info("replication").get("role") == "master":
                    out.append(n)
            finally:
                c.close()
        return out

    def node_of(self, slot: int) -> RedisServer:
        """The live primary serving `slot`, as the cluster sees it now."""
        by_port = {n.port: n for n in self.nodes if n.proc is not None}
        for n in self.primaries():
            c = self._conn(n)
            try:
                owner = _owner(c, slot)
            finally:
                c.close()
            if owner in by_port:
                return by_port[owner]
        raise TransientError(f"no live primary serves slot {slot}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (a crash); its replica takes over after the node timeout."""
        node.kill()
        node.proc = None

    def restart(self, node: RedisServer, timeout: float = 10.0) -> None:
        """Start a killed node again on its port; it rejoins (as a replica of whoever took
        over its slots) from its nodes.conf."""
        node.start(timeout)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _owner(conn, slot: int) -> int | None:
    """The port of the primary that serves `slot` in this node's view."""
    for entry in conn.execute_command("CLUSTER", "SLOTS"):
        lo, hi, primary = entry[0], entry[1], entry[2]
        if lo <= slot <= hi:
            return int(primary[1])
    return None
