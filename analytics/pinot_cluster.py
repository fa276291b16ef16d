"""A local Apache Pinot (0.11.0, the newest whose server and Kafka plugin Maven Central serves)
for tests, benchmarks and `ffs pinot up`: ZooKeeper in one JVM, controller + broker + server in
another, every port free and explicit, data in a temporary folder, stopped (and the folder
removed) on exit. The jars come from Maven Central through `make setup` (infra/jvm/pinot).
Production points pinot.broker_url / pinot.controller_url at a real cluster instead.

    with LocalPinot(log=print) as pinot:
        cfg.pinot.controller_url, cfg.pinot.broker_url = pinot.controller_url, pinot.broker_url

Why this shape:
- `StartServiceManager -bootstrapServices ...` builds its configs with nulls in them (NPE in
  PinotConfiguration.relaxProperties), so each role gets a properties file of its own
  (`-bootstrapConfigPaths`) naming every port, directory and host (127.0.0.1).
- one JVM for the three roles: one copy of Pinot's classes and one heap instead of three
  (measured: ready in 7-11 s on 2 cores, about 450-550 MB RSS for both JVMs at start).
- listeners on 127.0.0.1 only (`*.access.protocols.http.host`): `controller.port` and
  `pinot.broker.client.queryPort` would bind 0.0.0.0.
- a temporary cluster is killed, not shut down: its folder goes next anyway.
- pinot-tools ships a log4j2.xml that writes to ./logs at INFO: a generated one (WARN, to a
  file in the cluster's folder) replaces it.
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ffs import jvm
from ffs.errors import TransientError
from ffs.net import free_port

ADMIN_MAIN = "org.apache.pinot.tools.admin.PinotAdministrator"
CLUSTER = "ffs"
DEFAULT_HEAP = "1536m"  # controller + broker + server, a few hundred thousand rows
ZK_HEAP = "128m"

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn" shutdownHook="disable">
  <Appenders>
    <File name="file" fileName="{log}" append="true">
      <PatternLayout pattern="%d{{ISO8601}} %p [%c{{1}}] [%t] %m%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="warn"><AppenderRef ref="file"/></Root>
    <!-- "Started Pinot [ROLE] instance [...] at N s since launch": start times in the log -->
    <Logger name="org.apache.pinot.tools.admin.command.StartServiceManagerCommand"
            level="info" additivity="false"><AppenderRef ref="file"/></Logger>
  </Loggers>
</Configuration>
"""


def _props(settings: dict[str, object]) -> str:
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (Linux /proc), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _post_json(url: str, body: dict, timeout_s: float = 5.0) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


class LocalPinot:
    """with LocalPinot() as p: ... p.controller_url, p.broker_url ...  (also start()/stop())."""

    def __init__(self, directory: Path | None = None, heap: str = DEFAULT_HEAP,
                 zk_heap: str = ZK_HEAP, log: Callable[[str], None] | None = None,
                 controller_port: int | None = None, broker_port: int | None = None,
                 settings: dict[str, dict[str, object]] | None = None):
        """settings: extra properties per role ("controller", "broker", "server"), e.g. the
        broker's access control (tests/fixtures/pinot/record.py records a 401 with it)."""
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ffs-pinot-"))
        self.heap, self.zk_heap, self.log = heap, zk_heap, log
        self.settings = settings or {}
        self.zk_port = free_port()
        self.controller_port = controller_port or free_port()
        self.broker_port = broker_port or free_port()
        self.server_port, self.server_admin_port, self.server_grpc_port = (
            free_port(), free_port(), free_port())
        self.query_ports = {role: (free_port(), free_port()) for role in ("broker", "server")}
        self.zk: jvm.JvmProcess | None = None
        self.pinot: jvm.JvmProcess | None = None
        self.start_seconds: float | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def controller_url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_port}"

    @property
    def zk_address(self) -> str:
        return f"127.0.0.1:{self.zk_port}"

    @property
    def server_instance(self) -> str:
        return f"Server_127.0.0.1_{self.server_port}"

    @property
    def broker_instance(self) -> str:
        return f"Broker_127.0.0.1_{self.broker_port}"

    @property
    def sqlalchemy_url(self) -> str:
        """pinotdb's URL, as Superset and Grafana use it."""
        return (f"pinot://127.0.0.1:{self.broker_port}/query/sql"
                f"?controller={self.controller_url}/")

    @property
    def log_path(self) -> Path:
        return self.dir / "pinot.log"

    def memory(self) -> dict[str, int]:
        """RSS in bytes of each JVM (zookeeper, pinot) and their total."""
        out = {"zookeeper": rss_bytes(self.zk.proc.pid) if self.zk and self.zk.proc else 0,
               "pinot": rss_bytes(self.pinot.proc.pid) if self.pinot and self.pinot.proc else 0}
        out["total"] = out["zookeeper"] + out["pinot"]
        return out

    # ------------------------------------------------------------------ configs

    def _configs(self) -> list[Path]:
        d, zk = self.dir, self.zk_address
        roles = {
            "controller": {
                "pinot.service.role": "CONTROLLER",
                "controller.helix.cluster.name": CLUSTER,
                "controller.zk.str": zk,
                "controller.host": "127.0.0.1",
                # a listener on 127.0.0.1 only ("controller.port" would bind 0.0.0.0)
                "controller.access.protocols": "http",
                "controller.access.protocols.http.host": "127.0.0.1",
                "controller.access.protocols.http.port": self.controller_port,
                "controller.vip.host": "127.0.0.1",
                "controller.vip.port": self.controller_port,
                "controller.data.dir": d / "controller" / "data",
                "controller.local.temp.dir": d / "controller" / "tmp",
                "controller.mode": "DUAL",
                "cluster.tenant.isolation.enable": "true",
                # periodic tasks: nothing to retain or rebalance in a test cluster
                "controller.retention.frequencyInSeconds": 3600,
                "controller.offline.segment.interval.checker.frequencyInSeconds": 3600,
                "controller.broker.resource.validation.frequencyInSeconds": 3600,
                "controller.statuschecker.frequencyInSeconds": 3600,
                "controller.task.frequencyInSeconds": 3600,
                "controller.realtime.segment.validation.frequencyInSeconds": 3600,
            },
            "broker": {
                "pinot.service.role": "BROKER",
                "pinot.cluster.name": CLUSTER,
                "pinot.zk.server": zk,
                "pinot.broker.hostname": "127.0.0.1",
                "pinot.broker.client.access.protocols": "http",
                "pinot.broker.client.access.protocols.http.host": "127.0.0.1",
                "pinot.broker.client.access.protocols.http.port": self.broker_port,
                "pinot.broker.instance.id": self.broker_instance,
                "pinot.query.server.port": self.query_ports["broker"][0],
                "pinot.query.runner.port": self.query_ports["broker"][1],
            },
            "server": {
                "pinot.service.role": "SERVER",
                "pinot.cluster.name": CLUSTER,
                "pinot.zk.server": zk,
                "pinot.server.netty.host": "127.0.0.1",
                "pinot.server.netty.port": self.server_port,
                "pinot.server.instance.id": self.server_instance,
                "pinot.server.adminapi.access.protocols": "http",
                "pinot.server.adminapi.access.protocols.http.host": "127.0.0.1",
                "pinot.server.adminapi.access.protocols.http.port": self.server_admin_port,
                "pinot.server.grpc.port": self.server_grpc_port,
                "pinot.server.grpc.enable": "false",
                "pinot.query.server.port": self.query_ports["server"][0],
                "pinot.query.runner.port": self.query_ports["server"][1],
                "pinot.server.instance.dataDir": d / "server" / "data",
                "pinot.server.instance.segmentTarDir": d / "server" / "segment",
                "pinot.server.instance.realtime.alloc.offheap": "true",
                # 0.11 answers a query with enableNullHandling=true (PinotClient's
                # null_handling=True) only from data table version 4 ("Null handling cannot
                # be enabled for data table version smaller than 4"); its default is 3
                "pinot.server.instance.currentDataTableVersion": 4,
            },
        }
        paths = []
        unknown = set(self.settings) - set(roles)
        if unknown:
            raise ValueError(f"settings for unknown role(s) {sorted(unknown)}; "
                             f"roles: {sorted(roles)}")
        for role, settings in roles.items():
            path = d / f"{role}.conf"
            path.write_text(_props({**settings, **self.settings.get(role, {})}))
            paths.append(path)
        return paths

    def _jvm_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.dir / 'log4j2.xml'}",
                "-Dpinot.admin.system.exit=false", "-Dzookeeper.admin.enableServer=false",
                f"-Djava.io.tmpdir={self.dir / 'tmp'}"]

    # ------------------------------------------------------------------ readiness

    def _zk_answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.zk_port), timeout=1) as s:
            s.sendall(b"srvr")
            return bool(s.recv(64))

    def _controller_healthy(self) -> bool:
        status, text = _get(f"{self.controller_url}/health")
        return status == 200 and text.strip().upper() == "OK"

    def _instances_live(self) -> bool:
        status, text = _get(f"{self.controller_url}/zk/ls?path=/{CLUSTER}/LIVEINSTANCES")
        if status != 200:
            return False
        live = json.loads(text)
        return self.server_instance in live and self.broker_instance in live

    def _broker_answers(self) -> bool:
        try:
            payload = _post_json(f"{self.broker_url}/query/sql", {"sql": "SELECT 1"})
        except urllib.error.HTTPError as exc:
            return exc.code in (401, 403)  # up, with access control: credentials are the caller's
        return "resultTable" in payload or "exceptions" in payload

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 180.0) -> LocalPinot:
        began = time.monotonic()
        for sub in ("zk", "tmp", "controller", "server"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "log4j2.xml").write_text(_LOG4J2.format(log=self.log_path))
        atexit.register(self.stop)
        self.zk = jvm.JvmProcess(
            "Pinot's ZooKeeper", ADMIN_MAIN,
            ["StartZookeeper", "-zkPort", str(self.zk_port), "-dataDir", str(self.dir / "zk")],
            "pinot", self.zk_heap, self.dir / "zookeeper.stdout",
            # a small heap that starts small: ZooKeeper holds a few hundred znodes here
            ["-Xms16m", "-XX:+UseSerialGC", *self._jvm_options()], cwd=self.dir).start()
        self.zk.wait_until(self._zk_answers, timeout_s, f"answering on {self.zk_port}")
        configs = self._configs()
        self.pinot = jvm.JvmProcess(
            "Pinot (controller, broker, server)", ADMIN_MAIN,
            ["StartServiceManager", "-zkAddress", self.zk_address, "-clusterName", CLUSTER,
             "-port", "-1", "-bootstrapConfigPaths", *map(str, configs)],
            "pinot", self.heap, self.dir / "pinot.stdout", self._jvm_options(),
            cwd=self.dir).start()
        left = lambda: timeout_s - (time.monotonic() - began)  # noqa: E731
        try:
            self.pinot.wait_until(self._controller_healthy, left(),
                                  f"healthy on {self.controller_url}")
            self.pinot.wait_until(self._instances_live, left(),
                                  "showing its broker and server as live in ZooKeeper")
            self.pinot.wait_until(self._broker_answers, left(),
                                  f"answering queries on {self.broker_url}")
        except TransientError as exc:
            tail = _tail(self.log_path)
            self.stop(remove=False)
            raise TransientError(f"{exc}\n{self.log_path}:\n{tail}") from None
        self.start_seconds = time.monotonic() - began
        if self.log:
            mem = self.memory()
            self.log(f"Apache Pinot {version()} (controller {self.controller_url}, broker "
                     f"{self.broker_url}) started in {self.start_seconds:.1f} s; RSS "
                     f"{mem['total'] / 2**20:.0f} MB (data in {self.dir})")
        return self

    def check_alive(self) -> None:
        for proc in (self.zk, self.pinot):
            if proc is not None:
                proc.check_alive()

    def stop(self, remove: bool = True) -> None:
        """Stop both JVMs. A temporary cluster is killed at once: its folder goes next, and
        Pinot's own shutdown (Helix disconnects, consumers closed) takes about 11 s; a
        cluster in a folder of the caller's is shut down properly."""
        for proc in (self.pinot, self.zk):  # Pinot first: it would log ZooKeeper going away
            if proc is None:
                continue
            if self._own_dir and remove:
                proc.kill()
            else:
                proc.stop()
        self.pinot = self.zk = None
        if remove and self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPinot:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def version() -> str:
    """The Pinot version on the resolved classpath (pinot-tools-<version>.jar)."""
    for jar in jvm.jars("pinot"):
        name = Path(jar).name
        if name.startswith("pinot-tools-") and name.endswith(".jar"):
            return name[len("pinot-tools-"):-len(".jar")]
    return "?"


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"

