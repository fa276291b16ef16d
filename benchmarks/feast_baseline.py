"""Feast as most teams run it, the peer our benchmarks and staleness tests compare with:
plain FeatureViews over the offline features table (every feature at every transaction,
written by `ffs backfill`), materialized into Feast's own online store, which then serves
each entity's value as of its last materialized event. Built from the loaded repo's
declarations (transformations/features.py), never hand-listed. The product's own repo, in
Feast's API, is feature_repo/ (`ffs apply` registers it).

What this peer gets:
- entities `customer` (customer_id) and `terminal` (terminal_id), both int64;
- one FileSource over the offline features table written by the backfill,
  `{offline}/features/event_date=YYYY-MM-DD/*.parquet`, timestamp field event_timestamp;
- `customer_features`: every customer WindowFeature and RecencyFeature;
- `terminal_features`: every terminal WindowFeature;
- `transaction_features`: the RequestFeatures, keyed by customer (see below);
- feature service FEATURE_SERVICE with all three views, i.e. every name in feature_names().

Request features are keyed by customer. They describe one transaction, and Feast needs an
entity for a batch feature view; keying them by transaction_id would make every lookup
need the transaction id, which neither the training labels (customer, terminal, time) nor
a scoring request that Feast has never seen can supply. Keyed by customer (as the
handbook's Feast setups do), an as-of join at a transaction's own timestamp returns that
transaction's row, which is what a training set built at the transactions needs. Online, or
at any later time, Feast serves the customer's *last materialized* transaction's amount and
flags: a limitation of Feast's model that our online read does not have (it computes them
from the request). An on-demand feature view would compute them from the request, but
every historical query would then need `amount` in the entity rows.

The source path comes from ffs config (FFS_OFFLINE_PATH, ffs.yaml, default data/offline);
a relative path is taken relative to the project root, so the registry records an absolute
path whatever the working directory.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity as FeastEntity
from feast import FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from ffs.config import Config, load_config
from transformations.features import (
    FEATURE_SERVICE,
    RECENCY_FEATURES,
    REQUEST_FEATURES,
    Entity,
    feature_dtypes,
    retention,
    windows_for,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FEATURES_TABLE = "features"

FEAST_TYPES = {"int64": Int64, "float64": Float64}

# Longest span an event can matter for (30-day windows + 7-day label delay): past it, a
# Feast as-of join returns nothing rather than a value that no window could still hold.
TTL: timedelta = max(retention(e) for e in Entity)


def offline_features_path(cfg: Config | None = None) -> Path:
    """Absolute path of the offline features table; relative config paths are taken
    relative to the project root, not the working directory."""
    cfg = cfg or load_config()
    root = Path(cfg.offline.path).expanduser()
    if not root.is_absolute():
        root = PROJECT_ROOT / root
    return (root / FEATURES_TABLE).resolve()


def feast_field(name: str) -> Field:
    dtype = feature_dtypes()[name]
    try:
        return Field(name=name, dtype=FEAST_TYPES[dtype])
    except KeyError:
        raise TypeError(f"feature {name!r}: no Feast type for dtype {dtype!r}; "
                        f"known: {sorted(FEAST_TYPES)}") from None


REQUEST_VIEW = "transaction_features"
REQUEST_ENTITY = Entity.CUSTOMER  # see the module docstring


def view_entities() -> dict[str, Entity]:
    """Feature view name -> the entity it is keyed by: one view per entity, plus the
    request features."""
    out = {f"{e.value}_features": e for e in Entity}
    out[REQUEST_VIEW] = REQUEST_ENTITY
    return out


def view_feature_names() -> dict[str, list[str]]:
    """Feature view name -> its features (declaration order); views without features
    are left out."""
    out = {
        f"{e.value}_features": [f.name for f in windows_for(e)]
        + [r.name for r in RECENCY_FEATURES if r.entity == e]
        for e in Entity
    }
    out[REQUEST_VIEW] = [f.name for f in REQUEST_FEATURES]
    return {view: names for view, names in out.items() if names}


def build(source_path: str | Path) -> dict[str, Any]:
    """All Feast objects over a features table at `source_path` (file or directory)."""
    entities = {
        e: FeastEntity(name=e.value, join_keys=[e.key], value_type=ValueType.INT64,
                       description=f"{e.value}, identified by {e.key}")
        for e in Entity
    }
    source = FileSource(
        name="features_source",
        path=str(source_path),
        timestamp_field="event_timestamp",
        description="offline features table: every feature at every transaction",
    )
    keyed_by = view_entities()
    views = [
        FeatureView(
            name=view,
            entities=[entities[keyed_by[view]]],
            ttl=TTL,
            schema=[feast_field(n) for n in names],
            source=source,
            online=True,
            description=f"{len(names)} features keyed by {keyed_by[view].key}",
        )
        for view, names in view_feature_names().items()
    ]
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=list(views),  # type: ignore[arg-type]  # FeatureView is one of its kinds
        description="every feature of the loaded repo (transformations.features.feature_names())",
    )
    return {
        "customer": entities[Entity.CUSTOMER],
        "terminal": entities[Entity.TERMINAL],
        "source": source,
        "views": views,
        "service": service,
    }


def objects(built: dict[str, Any]) -> list[object]:
    """The list to pass to FeatureStore.apply()."""
    return [built["customer"], built["terminal"], built["source"], *built["views"],
            built["service"]]
