"""A local Apache Kafka (4.x, KRaft, one node that is both broker and controller) for tests,
the demo, benchmarks and `ffs broker`: free ports, data in a temporary folder, stopped (and
the folder removed) on exit. The jars come from Maven Central through `make setup`
(infra/jvm/pom.xml, module `kafka`). Production points `kafka.bootstrap_servers` at a real
cluster instead and never starts this.

    with LocalKafka() as kafka:
        cfg.kafka.bootstrap_servers = kafka.bootstrap_servers
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ffs import jvm
from ffs.errors import TransientError
from ffs.net import free_port

KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
DEFAULT_HEAP = "512m"  # plenty for tests and the demo; fits beside Spark, Pinot and Redis

# Single node: every internal topic has one replica, and few partitions so that the first
# consumer group or transaction does not wait for 50 partitions to be created.
_SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "inter.broker.listener.name": "PLAINTEXT",
    "num.partitions": "4",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "log.retention.hours": "-1",  # tests replay from the start; the folder is temporary
    "message.max.bytes": "1048588",
}

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %p [%c{{1}}] %m%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def cluster_id() -> str:
    """A Kafka Uuid as text: 16 random bytes, URL-safe base64 without padding."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka refuses ids that look like options
            return text


class LocalKafka:
    """with LocalKafka() as k: ... k.bootstrap_servers ...  (also .start() / .stop())."""

    def __init__(self, port: int | None = None, directory: Path | None = None,
                 heap: str = DEFAULT_HEAP, log=None):
        self.port = port or free_port()
        self.controller_port = free_port()
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ffs-kafka-"))
        self.heap, self.log = heap, log
        self.process: jvm.JvmProcess | None = None
        self.start_seconds: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "kafka.log"

    def _write_config(self) -> Path:
        settings = dict(_SETTINGS)
        settings.update({
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},"
                          f"CONTROLLER://127.0.0.1:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.dir / "data"),
        })
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_path))
        return path

    def _jvm_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.dir}"]

    def _format(self, config: Path) -> None:
        cmd = [jvm.java(), "-Xmx256m", *self._jvm_options(), "-cp", jvm.classpath("kafka"),
               STORAGE_TOOL, "format", "-t", cluster_id(), "-c", str(config),
               "--ignore-formatted"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise TransientError(f"formatting Kafka's storage failed ({done.returncode}):\n"
                                 f"{(done.stdout + done.stderr)[-2000:]}")

    def start(self, timeout_s: float = 90.0) -> LocalKafka:
        began = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.dir / "data" / "meta.properties").exists():
            self._format(config)
        self.process = jvm.JvmProcess("Kafka", KAFKA_MAIN, [str(config)], "kafka", self.heap,
                                      self.dir / "kafka.stdout", self._jvm_options())
        self.process.start()
        atexit.register(self.stop)
        from confluent_kafka.admin import AdminClient

        settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                                    "log.connection.close": False, "logger": _boot_log}
        probe = [AdminClient(settings)]
        self.process.wait_until(lambda: bool(probe[0].list_topics(timeout=1.0).brokers),
                                timeout_s, f"answering on {self.port}")
        probe.clear()  # librdkafka clients close when collected; this one must not outlive us
        self.start_seconds = time.monotonic() - began
        if self.log:
            self.log(f"Apache Kafka (KRaft) on {self.bootstrap_servers} started in "
                     f"{self.start_seconds:.1f} s (data in {self.dir})")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, data kept: for restart tests (start() again on the same directory)."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# librdkafka logs 'connection refused' while the broker boots: expected, not news
_boot_log = logging.getLogger("ffs.kafka.boot")
_boot_log.addHandler(logging.NullHandler())
_boot_log.propagate = False
