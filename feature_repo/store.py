"""Open this Feast repo from Python with the project's configuration.

feature_store.yaml reads the Redis connection from ${FFS_FEAST_REDIS} (Feast expands
environment variables in that file, without defaults). `open_store()` fills it in from ffs
config (FFS_REDIS_URL / ffs.yaml, default redis://127.0.0.1:6379/0) when it is unset, so
one setting drives our online read and Feast alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from ffs.config import Config, load_config
from ffs.errors import ConfigError

REPO_DIR = Path(__file__).resolve().parent
REDIS_ENV = "FFS_FEAST_REDIS"


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


def open_store(repo_dir: str | Path = REPO_DIR, cfg: Config | None = None):
    """FeatureStore over this repo, whatever the working directory."""
    from feast import FeatureStore

    if not os.environ.get(REDIS_ENV):
        os.environ[REDIS_ENV] = feast_redis_connection(cfg or load_config())
    return FeatureStore(repo_path=str(repo_dir))
