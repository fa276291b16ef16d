"""Start and stop a private redis-server on a free port (tests, demo, benchmarks).

Never touches a user's Redis: a fresh process, its own port and directory, stopped on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ffs.errors import TerminalError, TransientError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, persist: bool = False,
                 directory: Path | None = None, password: str | None = None):
        exe = shutil.which("redis-server")
        if exe is None:
            raise TerminalError("redis-server not found: run `make setup` (installs it on "
                                "Debian) or install Redis 6+")
        self.exe, self.port = exe, port or free_port()
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ffs-redis-"))
        self.persist, self.password = persist, password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.persist else "no",
                "--protected-mode", "yes" if self.password else "no", "--loglevel", "warning"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TerminalError(f"redis-server exited at start (port {self.port})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TransientError(f"redis-server did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
