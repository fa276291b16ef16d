"""Start and stop a private redis-server on a free port (tests, demo, benchmarks).

Never touches a user's Redis: a fresh process, its own port and directory, stopped on exit.
A directory it made itself is removed when it stops (with `persist`, only on leaving the
`with` block, so that a restart finds its append-only file); one it was given is kept.
With `tls_cert_file`/`tls_key_file` the server listens with TLS only (on `port`), clients
are not asked for certificates, and `url` is a rediss:// address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from ffs.errors import TerminalError, TransientError
from ffs.net import free_port

__all__ = ["RedisServer", "free_port"]  # free_port: tests and benchmarks import it here


def _resp(*args: str) -> bytes:
    """One command in the Redis protocol (safe for passwords with spaces)."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RedisServer:
    def __init__(self, port: int | None = None, persist: bool = False,
                 directory: Path | None = None, password: str | None = None,
                 tls_cert_file: str | Path | None = None, tls_key_file: str | Path | None = None,
                 tls_ca_file: str | Path | None = None, extra_args: tuple[str, ...] = ()):
        """extra_args: more redis-server options (online/redis_cluster.py: cluster mode)."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise TerminalError("redis-server not found: run `make setup` (installs it on "
                                "Debian) or install Redis 6+")
        if (tls_cert_file is None) != (tls_key_file is None):
            raise TerminalError("TLS needs both tls_cert_file and tls_key_file")
        self.exe, self.port = exe, port or free_port()
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ffs-redis-"))
        self.persist, self.password = persist, password
        self.tls_cert_file, self.tls_key_file = tls_cert_file, tls_key_file
        self.tls_ca_file = tls_ca_file
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis-server.log"

    def _args(self) -> list[str]:
        args = [self.exe, "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.persist else "no",
                "--protected-mode", "yes" if self.password else "no", "--loglevel", "warning"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.tls_cert_file),
                     "--tls-key-file", str(self.tls_key_file), "--tls-auth-clients", "no"]
            if self.tls_ca_file:
                args += ["--tls-ca-cert-file", str(self.tls_ca_file)]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(self._args(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise TerminalError(f"redis-server exited at start (port {self.port}):\n{tail}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise TransientError(f"redis-server did not answer on {self.port} within {timeout} s")

    def _ready(self) -> bool:
        """Listening, and (plain TCP) answering PING: not still loading its append-only file."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.tls:
                    return True
                cmds = [("AUTH", self.password)] if self.password else []
                s.sendall(b"".join(_resp(*c) for c in cmds + [("PING",)]))
                reply = b""
                while reply.count(b"\r\n") < len(cmds) + 1:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    reply += chunk
                return reply.rstrip().endswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, nothing flushed (fault tests)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if not self.persist:
            self._remove_own_dir()

    def _remove_own_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._remove_own_dir()
