"""Where the shipped repo's sources live: the offline tables and Kafka topics of the ffs
config (FFS_OFFLINE_PATH, FFS_KAFKA_*, ffs.yaml), so one setting drives the jobs and what
Feast's registry records. A relative offline path is taken from the project root."""

from __future__ import annotations

from pathlib import Path

from ffs.config import load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def offline_table(name: str) -> str:
    root = Path(load_config().offline.path).expanduser()
    if not root.is_absolute():
        root = PROJECT_ROOT / root
    return str((root / name).resolve())


def kafka_settings() -> dict[str, str]:
    k = load_config().kafka
    return {"bootstrap_servers": k.bootstrap_servers or "localhost:9092",
            "transactions_topic": k.transactions_topic, "labels_topic": k.labels_topic}
