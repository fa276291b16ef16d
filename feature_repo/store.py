"""Open this Feast repo from Python with the project's configuration.

feature_store.yaml reads the Redis connection from ${FFS_FEAST_REDIS} (Feast expands
environment variables in that file, without defaults). `open_store()` fills it in from ffs
config (FFS_REDIS_URL / ffs.yaml, default redis://127.0.0.1:6379/0) when it is unset, so
one setting drives our online read and Feast alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from ffs.config import Config, load_config
from ffs.transformations.repo import FEAST_REDIS_ENV, feast_redis_connection

__all__ = ["REDIS_ENV", "REPO_DIR", "feast_redis_connection", "open_store"]

REPO_DIR = Path(__file__).resolve().parent
REDIS_ENV = FEAST_REDIS_ENV


def open_store(repo_dir: str | Path = REPO_DIR, cfg: Config | None = None):
    """FeatureStore over this repo, whatever the working directory."""
    from feast import FeatureStore

    if not os.environ.get(REDIS_ENV):
        os.environ[REDIS_ENV] = feast_redis_connection(cfg or load_config())
    return FeatureStore(repo_path=str(repo_dir))
