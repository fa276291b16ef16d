"""The JVM parts resolved by `make setup` (infra/jvm/pom.xml -> infra/jvm.sh): their classpaths,
the Java to run them with, and a supervised JVM process for the local services (Kafka, Pinot).

Classpath files live in `.jvm/` at the checkout's root, or `$FFS_JVM_DIR`; each is one line of
jar paths inside the Maven cache, separated by ':'.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ffs.errors import TerminalError, TransientError

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("kafka", "spark-kafka", "pinot")

# What Java 17+ must open for Pinot's and Kafka's direct-memory and reflection tricks.
ADD_OPENS = [f"--add-opens=java.base/{pkg}=ALL-UNNAMED" for pkg in (
    "java.nio", "sun.nio.ch", "java.lang", "java.util", "java.lang.reflect",
    "jdk.internal.misc", "java.util.concurrent", "java.io", "java.net")] + [
    "-Dio.netty.tryReflectionSetAccessible=true"]


def jvm_dir() -> Path:
    return Path(os.environ.get("FFS_JVM_DIR") or ROOT / ".jvm")


def jars(module: str) -> list[str]:
    """The jars of one module of infra/jvm/pom.xml, or a clear error naming the fix."""
    if module not in MODULES:
        raise ValueError(f"unknown JVM module {module!r}; known: {', '.join(MODULES)}")
    path = jvm_dir() / f"{module}.classpath"
    try:
        entries = [e for e in path.read_text().strip().split(":") if e]
    except OSError:
        raise TerminalError(f"the JVM part {module!r} is not resolved ({path} is missing): "
                            f"run `make setup`, which fetches it from Maven Central") from None
    missing = [e for e in entries if not Path(e).exists()]
    if missing or not entries:
        raise TerminalError(f"the JVM part {module!r} lists {len(missing)} jar(s) that are gone "
                            f"from the Maven cache (first: {missing[:1]}): run `make setup`")
    return entries


def classpath(module: str) -> str:
    return ":".join(jars(module))


def java() -> str:
    """$JAVA_HOME/bin/java, else java on PATH (Java 17+: setup installs it)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    exe = shutil.which("java")
    if exe is None:
        raise TerminalError("Java 17+ is needed for Kafka, Pinot and Spark: run `make setup` "
                            "(installs it on Debian) or set JAVA_HOME")
    return exe


class JvmProcess:
    """One JVM started in its own session (so a Ctrl-C to the caller does not reach it first),
    logging to a file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, main_class: str, args: list[str], module: str,
                 heap: str, log_path: Path, jvm_options: list[str] | None = None,
                 cwd: Path | None = None):
        self.name, self.main_class, self.args = name, main_class, args
        self.module, self.heap, self.log_path = module, heap, Path(log_path)
        self.jvm_options, self.cwd = jvm_options or [], cwd
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        # a JVM that ran out of memory exits (and the caller reports it) instead of limping
        return [java(), f"-Xmx{self.heap}", "-XX:+ExitOnOutOfMemoryError", *ADD_OPENS,
                *self.jvm_options, "-cp", classpath(self.module), self.main_class, *self.args]

    def start(self) -> JvmProcess:
        cmd = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise TransientError(f"{self.name} exited with code {self.proc.returncode}:\n"
                                 f"{self.log_tail()}\n(log: {self.log_path})")

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll `ready` until true; seconds taken. Fails fast if the JVM dies."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            self.check_alive()
            try:
                if ready():
                    return time.monotonic() - began
            except Exception:  # noqa: BLE001 - not up yet: connection refused, 5xx, ...
                pass
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise TransientError(f"{self.name} was not {what} within {timeout_s:.0f} s:\n{tail}\n"
                             f"(log: {self.log_path})")

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
