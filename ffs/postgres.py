"""Start and stop a private PostgreSQL server on a free port (tests; Feast's SQL registry).

Never touches a system PostgreSQL: Debian's server binaries (`initdb`, `postgres`) make a
fresh cluster in a private temporary directory, listening on 127.0.0.1 only, on a free port,
with its unix socket in that directory too; the process is stopped on exit. One user with a
random password (scram-sha-256, also on the unix socket) owns one database, and `url` is the
SQLAlchemy URL Feast's SQL registry takes. The password is in `url` and `password` only: it
is never logged, and `repr()` and `safe_url` leave it out.

PostgreSQL refuses to run as root: when this process is root (CI, this project's machines),
initdb and the server run as an unprivileged user (`postgres` when the Debian package made
one, else `nobody`) through `setpriv` (or `runuser`), and the directory is handed to that user.

A clean `stop()` removes the directory it created; when the server does not come up, the
directory and its log (`log_path`) are kept and the error shows the log's tail.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from ffs.errors import MissingDependency, TerminalError, TransientError
from ffs.net import free_port

__all__ = ["LocalPostgres", "find_bindir"]

DEBIAN_BINDIRS = Path("/usr/lib/postgresql")
_FIX = ("run `make setup` (installs Debian's `postgresql` package) or install PostgreSQL's "
        "server binaries (initdb, postgres)")


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", p.parent.name)) or (0,)


def find_bindir(debian_root: Path = DEBIAN_BINDIRS) -> Path:
    """The directory holding `initdb` and `postgres`: the newest Debian version under
    /usr/lib/postgresql/<version>/bin, else the one `postgres` is found in on PATH."""
    bindirs = [p for p in debian_root.glob("*/bin")
               if (p / "initdb").is_file() and (p / "postgres").is_file()]
    if bindirs:
        return max(bindirs, key=_version_key)
    exe = shutil.which("postgres")
    if exe is not None:
        bindir = Path(exe).resolve().parent
        if (bindir / "initdb").is_file():
            return bindir
    raise TerminalError(f"PostgreSQL server binaries (initdb, postgres) not found under "
                        f"{debian_root}/*/bin nor on PATH: {_FIX}")


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise TerminalError("running as root, and PostgreSQL refuses root, but there is no "
                        "'postgres' or 'nobody' user to run it as: run the tests as a normal "
                        "user, or create one (`useradd --system postgres`)")


class LocalPostgres:
    def __init__(self, port: int | None = None, database: str = "feast_registry",
                 user: str = "ffs", password: str | None = None,
                 bindir: str | Path | None = None, directory: Path | None = None):
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        self.initdb, self.postgres = self.bindir / "initdb", self.bindir / "postgres"
        for exe in (self.initdb, self.postgres):
            if not os.access(exe, os.X_OK):
                raise TerminalError(f"{exe} not found or not executable: {_FIX}")
        self.port, self.database, self.user = port or free_port(), database, user
        self._password = password or secrets.token_urlsafe(24)
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ffs-postgres-"))
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None
        self._as: list[str] = []  # the command prefix that drops root, if we are root
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._run_as = _unprivileged_user()
            self._as = self._drop_root_prefix(self._run_as)

    @staticmethod
    def _drop_root_prefix(u: pwd.struct_passwd) -> list[str]:
        setpriv = shutil.which("setpriv")
        if setpriv:  # execs in place: the Popen's pid is the postmaster itself
            return [setpriv, f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}", "--clear-groups",
                    "--"]
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", u.pw_name, "--"]
        raise TerminalError("running as root, and PostgreSQL refuses root, but neither "
                            "setpriv nor runuser (util-linux) is installed to drop privileges")

    # -- addresses ---------------------------------------------------------------------------
    @property
    def password(self) -> str:
        return self._password

    @property
    def url(self) -> str:
        """SQLAlchemy URL with the psycopg 3 driver, the password included."""
        return (f"postgresql+psycopg://{quote(self.user, safe='')}:"
                f"{quote(self._password, safe='')}@127.0.0.1:{self.port}/{self.database}")

    @property
    def safe_url(self) -> str:
        """`url` with the password masked, for logs and messages."""
        return f"postgresql+psycopg://{self.user}:***@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    def __repr__(self) -> str:
        state = "running" if self.proc is not None and self.proc.poll() is None else "stopped"
        return (f"LocalPostgres(port={self.port}, user={self.user!r}, "
                f"database={self.database!r}, dir={str(self.dir)!r}, {state})")

    # -- lifecycle ---------------------------------------------------------------------------
    def _server_args(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),  # not /var/run/postgresql
            "shared_buffers": "32MB",
            "max_connections": "50",
            # a throwaway test cluster: losing it in a machine crash costs nothing, and
            # skipping the disk flushes makes schema creation and commits much faster
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        args = [*self._as, str(self.postgres), "-D", str(self.data_dir)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        return args

    def _initdb(self, timeout: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.dir / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._password + "\n")
        if self._run_as is not None:
            for p in (self.dir, pwfile):
                os.chown(p, self._run_as.pw_uid, self._run_as.pw_gid)
            if subprocess.run([*self._as, "test", "-w", str(self.dir)]).returncode != 0:
                raise TerminalError(f"user {self._run_as.pw_name} cannot write {self.dir} "
                                    f"(a parent directory is closed to it): set TMPDIR to a "
                                    f"directory every user can reach, such as /tmp")
        assert self._log is not None
        try:
            done = subprocess.run(
                [*self._as, str(self.initdb), "-D", str(self.data_dir), "-U", self.user,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale",
                 "--no-sync", "--no-instructions"],
                stdout=self._log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TransientError(f"initdb did not finish within {timeout} s "
                                 f"(log: {self.log_path})") from None
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise TerminalError(f"initdb failed (exit {done.returncode}, log: {self.log_path}):"
                                f"\n{self._log_tail()}")

    def start(self, timeout: float = 30.0) -> LocalPostgres:
        try:
            import psycopg  # noqa: F401  (fail before starting anything)
        except ImportError:
            raise MissingDependency("psycopg", "LocalPostgres") from None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # closed in stop()
        try:
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(timeout)
            self.proc = subprocess.Popen(self._server_args(), stdout=self._log,
                                         stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise TerminalError(f"postgres exited at start (port {self.port}, log: "
                                        f"{self.log_path}):\n{self._log_tail()}")
                if self._ready():
                    self._create_database()
                    return self
                time.sleep(0.05)
            raise TransientError(f"postgres did not accept connections on {self.port} within "
                                 f"{timeout} s (log: {self.log_path}):\n{self._log_tail()}")
        except BaseException:
            self._shutdown()  # keep the directory and its log for the error above
            raise

    def _connect(self, dbname: str):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user,
                               password=self._password, dbname=dbname, connect_timeout=2,
                               autocommit=True)

    def _ready(self) -> bool:
        import psycopg

        try:
            with self._connect("postgres"):
                return True
        except psycopg.OperationalError:  # not listening yet, or "starting up"
            return False

    def _create_database(self) -> None:
        from psycopg import sql

        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def _shutdown(self) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGINT is the "fast" shutdown (disconnects clients). To the postmaster itself,
            # by the pid it wrote, in case `runuser` (which would not pass SIGINT on) sits
            # between us and it.
            pid = self._postmaster_pid() or self.proc.pid
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the server; remove the directory if this object created it."""
        self._shutdown()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
