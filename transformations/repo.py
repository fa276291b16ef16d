"""Which feature repo the product runs, and its compiled declarations, quick to load.

The repo is a Feast repo directory (feature_store.yaml and Python files declaring Feast
objects): `features.repo` in the config (FFS_FEATURES_REPO), by default the shipped
`feature_repo/`. Compiling it imports Feast and the repo (seconds), so the result is kept in
`<repo>/.ffs/compiled.json` with a digest of the repo's files and of the settings it was
compiled with; every process after the first loads that file (milliseconds), and a changed
file or setting compiles again. `ffs apply` compiles, checks and registers explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from ffs.config import Config, load_config
from ffs.errors import ConfigError, InputError
from ffs.transformations.compiler import Compiled, compile_objects

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = PROJECT_ROOT / "feature_repo"
CACHE = Path(".ffs") / "compiled.json"
FORMAT = 4  # bump when Compiled's JSON changes


def repo_dir(cfg: Config | None = None) -> Path:
    cfg = cfg or load_config()
    path = Path(cfg.features.repo).expanduser() if cfg.features.repo else SHIPPED
    path = path if path.is_absolute() else (Path.cwd() / path)
    if path.is_file() and path.name == "feature_store.yaml":
        path = path.parent
    if not (path / "feature_store.yaml").exists():
        raise InputError(f"{path} is not a Feast repo (no feature_store.yaml): set "
                         f"features.repo (FFS_FEATURES_REPO) or pass --repo")
    return path.resolve()


def _files(repo: Path) -> list[Path]:
    out = []
    for p in sorted(repo.rglob("*")):
        rel = p.relative_to(repo).parts
        if p.is_file() and p.suffix in (".py", ".yaml", ".yml") and not any(
                part.startswith(".") or part == "__pycache__" for part in rel):
            out.append(p)
    return out


def digest(repo: Path, cfg: Config) -> str:
    """Of the repo's files, the settings compiled with, and the compiler itself (a product
    upgrade compiles again)."""
    declared = sorted(cfg.ids.declared().items())
    h = hashlib.sha256(f"{FORMAT}|{cfg.features.service}|{declared}".encode())
    here = Path(__file__).resolve().parent
    for name in ("compiler.py", "declarations.py", "request.py"):
        h.update((here / name).read_bytes())
    for p in _files(repo):
        h.update(str(p.relative_to(repo)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def load(cfg: Config | None = None) -> Compiled:
    """The repo's declarations: from the cache when it matches the repo, else compiled."""
    cfg = cfg or load_config()
    repo = repo_dir(cfg)
    key = digest(repo, cfg)
    cache = repo / CACHE
    try:
        stored = json.loads(cache.read_text())
        if stored.get("digest") == key:
            return Compiled.from_json(json.dumps(stored["compiled"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    compiled = compile_repo(repo, cfg)
    save(repo, key, compiled)
    return compiled


def save(repo: Path, key: str, compiled: Compiled) -> None:
    """Write the cache atomically (concurrent first runs each write a whole file); a
    read-only repo simply compiles every time."""
    record = json.dumps({"digest": key, "compiled": json.loads(compiled.to_json())})
    try:
        (repo / CACHE).parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=repo / CACHE.parent, prefix=".compiled-")
        with os.fdopen(fd, "w") as f:
            f.write(record)
        os.replace(tmp, repo / CACHE)
    except OSError:
        pass


def parse(repo: Path):
    """Feast's own collection of the repo's objects (feast.repo_operations.parse_repo),
    imported as `feast apply` imports them: from the repo's directory, on sys.path."""
    import linecache
    import warnings

    _without_typeguard()
    from feast.repo_operations import get_repo_files, parse_repo, py_path_to_module

    with inside(repo), warnings.catch_warnings():
        # Feast warns at every StreamFeatureView that the class is experimental
        warnings.filterwarnings("ignore", "Stream feature views are experimental")
        warnings.filterwarnings("ignore", "On demand feature view is an experimental")
        for f in get_repo_files(repo):  # a repo parsed before in this process: fresh imports
            sys.modules.pop(py_path_to_module(f), None)
        linecache.checkcache()  # Feast reads each function's source: the file as it is now
        return parse_repo(repo)


def _without_typeguard() -> None:
    """Feast wraps its classes in typeguard's @typechecked, which recompiles every method
    from its source at import: 4.5 of Feast's 5.3 s import (`ffs apply` in 5 s is a target).
    Its run-time checks of Feast's constructor arguments are what the compiler checks again
    with the object, reason and fix, so apply imports Feast without them, as `python -O`
    would. Only when Feast is not imported yet: a process that has it keeps it as it is."""
    if "feast" in sys.modules:
        return
    import typeguard

    def typechecked(target=None, **_options):
        return target if target is not None else (lambda t: t)

    typeguard.typechecked = typechecked  # type: ignore[assignment]


FEAST_REDIS_ENV = "FFS_FEAST_REDIS"  # what a repo's feature_store.yaml reads its Redis from


def feast_redis_connection(cfg: Config) -> str:
    """ffs Redis settings as a Feast connection string:
    host:port[,db=N][,password=...][,ssl=true]."""
    url = urlparse(cfg.redis.url)
    if url.scheme not in ("redis", "rediss"):
        raise ConfigError(f"redis.url: expected redis://host:port/db, found scheme {url.scheme!r}")
    parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
    db = url.path.strip("/")
    if db and db != "0":
        parts.append(f"db={int(db)}")
    password = cfg.redis.password.reveal() if cfg.redis.password else (
        unquote(url.password) if url.password else None)
    if password:
        parts.append(f"password={password}")
    if url.scheme == "rediss" or cfg.redis.tls:
        parts.append("ssl=true")
    return ",".join(parts)


def compile_repo(repo: Path, cfg: Config) -> Compiled:
    return compile_contents(parse(repo), cfg)


def compile_contents(contents, cfg: Config) -> Compiled:
    """Feast's collected objects compiled under the config's declared ids and service."""
    return compile_objects(contents, cfg.ids.declared(), cfg.features.service or None)


@contextlib.contextmanager
def inside(repo: Path) -> Iterator[None]:
    cwd, path = Path.cwd(), list(sys.path)
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
