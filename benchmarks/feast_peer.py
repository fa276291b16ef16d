"""Feast as a peer: the same features, retrieved the way Feast 0.67 retrieves them.

`feast_historical` builds a throwaway Feast repo in `work_dir` over an offline features
table (the backfill's output), applies the objects of `feature_repo.definitions` (built from
the same declarations as ours) and times `get_historical_features(...).to_df()` with the
feature service.

What Feast returns is an as-of join: per entity row and feature view, the row of the
view's entity with the latest event_timestamp at or before the entity row's timestamp
(within the ttl). A window feature read that way is the window *at that earlier event*, not
at the requested time; our engine computes the window at the requested time.

Feast 0.67's file (dask) store also loses entity rows: rows sharing (keys, timestamp) are
collapsed (feast issue #6787), and a row is dropped when one view's entity has source rows
but none in [t - ttl, t]. `feast_historical` sends distinct requests and returns one row
per entity_df row, in order, with nulls where Feast returned nothing
(`extras["requests_dropped_by_feast"]` counts them).

The result is a `FeastRun` dataclass; it also unpacks as `(df, seconds)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ffs.transformations.features import FEATURE_SERVICE, KEY_COLUMNS, feature_names

ROW = "__feast_peer_row"  # carries a request's position through Feast, which reorders rows
PROJECT = "feast_peer"


@dataclass
class FeastRun:
    df: pd.DataFrame  # entity_df's rows and columns, in order, + every feature
    seconds: float  # get_historical_features(...) + to_df()
    consolidate_seconds: float = 0.0  # writing one parquet file from a directory (0 if not done)
    apply_seconds: float = 0.0  # FeatureStore(...) + apply([...])
    source_path: Path | None = None  # what the FileSource read
    # requests: distinct (customer, terminal, time) sent to Feast;
    # requests_dropped_by_feast: how many of them Feast returned no row for
    extras: dict[str, float] = field(default_factory=dict)

    def __iter__(self):
        """`df, seconds = feast_historical(...)` keeps working."""
        return iter((self.df, self.seconds))


def _yaml(work_dir: Path) -> str:
    return (
        f"project: {PROJECT}\n"
        "provider: local\n"
        "registry:\n"
        "  registry_type: file\n"
        f"  path: {work_dir / 'registry.db'}\n"
        "  cache_ttl_seconds: 0\n"
        "offline_store:\n"
        "  type: file\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {work_dir / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )


def consolidate(offline_features_dir: Path, out: Path) -> Path:
    """One parquet file with the table's columns (partition columns such as event_date are
    dropped), streamed batch by batch so memory stays bounded."""
    dataset = ds.dataset(str(offline_features_dir), format="parquet", partitioning="hive")
    keep = ["transaction_id", *KEY_COLUMNS, "event_timestamp", *feature_names()]
    missing = [c for c in keep if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{offline_features_dir}: missing column(s) {missing}")
    schema = pa.schema([dataset.schema.field(c) for c in keep])
    with pq.ParquetWriter(str(out), schema) as writer:
        for batch in dataset.to_batches(columns=keep):
            writer.write_batch(batch)
    return out


def feast_historical(offline_features_dir: Path, entity_df: pd.DataFrame, work_dir: Path,
                     consolidate_first: bool = True) -> FeastRun:
    """Historical features for `entity_df` (customer_id, terminal_id, event_timestamp UTC)
    through Feast's file offline store.

    consolidate_first: Feast's file store reads the path with dask.read_parquet, which does
    read a hive-partitioned directory, but then every file is a dask partition and the
    point-in-time join shuffles and sorts across them: on 10 daily partitions it was ~6x
    slower than one file (1.9 s vs 0.3 s) and dask emits FutureWarnings (downcasting in
    _shuffle.py). So by default the directory is first written as one parquet file in
    work_dir (timed separately, `consolidate_seconds`). Pass False to read it as it is.
    """
    from feast import FeatureStore

    from benchmarks.feast_baseline import build, objects

    offline_features_dir = Path(offline_features_dir).resolve()
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    needed = {*KEY_COLUMNS, "event_timestamp"}
    missing = needed - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df is missing column(s) {sorted(missing)}")

    consolidate_s = 0.0
    source = offline_features_dir
    if consolidate_first and offline_features_dir.is_dir():
        t0 = time.perf_counter()
        source = consolidate(offline_features_dir, work_dir / "features.parquet")
        consolidate_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    (work_dir / "feature_store.yaml").write_text(_yaml(work_dir))
    store = FeatureStore(repo_path=str(work_dir))
    store.apply(objects(build(source)))
    service = store.get_feature_service(FEATURE_SERVICE)
    apply_s = time.perf_counter() - t0

    # Feast's file store collapses entity rows that share keys and timestamp (feast #6787):
    # send each distinct request once and map the answers back to every row.
    keys = [*KEY_COLUMNS, "event_timestamp"]
    requests = entity_df[keys].drop_duplicates().reset_index(drop=True)
    requests[ROW] = range(len(requests))
    t0 = time.perf_counter()
    got = store.get_historical_features(entity_df=requests, features=service).to_df()
    seconds = time.perf_counter() - t0

    names = feature_names()
    got = got.set_index(ROW)[names]
    # Feast also drops a request outright when one view's entity has rows in the source but
    # none in [t - ttl, t] (dask.py _filter_ttl keeps only null matches); such rows come
    # back here with every feature null, as an as-of join with no match would give.
    dropped = len(requests) - len(got)
    answers = requests.join(got, on=ROW)
    out = entity_df.reset_index(drop=True).merge(
        answers.drop(columns=ROW), on=keys, how="left", validate="many_to_one")
    out = out[[*entity_df.columns, *[c for c in names if c not in entity_df.columns]]]
    return FeastRun(out, seconds, consolidate_s, apply_s, Path(source),
                    extras={"requests": float(len(requests)),
                            "requests_dropped_by_feast": float(dropped)})
