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
from ffs.transformations.features import (
    COMPILED,
    ENTITIES,
    FEATURE_SERVICE,
    REQUEST_FEATURES,
    Entity,
    entity_feature_names,
    feature_dtypes,
    retention,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FEATURES_TABLE = "features"

FEAST_TYPES = {"int64": Int64, "float64": Float64}

# Longest span an event can matter for (30-day windows + 7-day label delay): past it, a
# Feast as-of join returns nothing rather than a value that no window could still hold.
TTL: timedelta = max(retention(e) for e in ENTITIES)


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
REQUEST_ENTITY: Entity = ENTITIES[0]  # see the module docstring


def _view(e: Entity) -> str:
    return f"{e.name.replace('+', '_')}_features"


def view_entities() -> dict[str, Entity]:
    """Feature view name -> the entity it is keyed by: one view per entity, plus the
    request features."""
    out = {_view(e): e for e in ENTITIES}
    out[REQUEST_VIEW] = REQUEST_ENTITY
    return out


def view_feature_names() -> dict[str, list[str]]:
    """Feature view name -> its features (declaration order); views without features
    are left out."""
    out = {_view(e): entity_feature_names(e) for e in ENTITIES}
    out[REQUEST_VIEW] = [f.name for f in REQUEST_FEATURES]
    return {view: names for view, names in out.items() if names}


def build(source_path: str | Path) -> dict[str, Any]:
    """All Feast objects over a features table at `source_path` (file or directory)."""
    # one Feast entity per join key; a composite entity's view lists several
    names = {k: e.name for e in ENTITIES if not e.composite for k in e.keys}
    kinds = {"int": ValueType.INT64, "string": ValueType.STRING}
    entities = {
        k: FeastEntity(name=names.get(k, k), join_keys=[k],
                       value_type=kinds[COMPILED.id_types.get(k, "int")],
                       description=f"{names.get(k, k)}, identified by {k}")
        for e in ENTITIES for k in e.keys
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
            entities=[entities[k] for k in keyed_by[view].keys],
            ttl=TTL,
            schema=[feast_field(n) for n in names],
            source=source,
            online=True,
            description=f"{len(names)} features keyed by {', '.join(keyed_by[view].keys)}",
        )
        for view, names in view_feature_names().items()
    ]
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=list(views),  # type: ignore[arg-type]  # FeatureView is one of its kinds
        description="every feature of the loaded repo (transformations.features.feature_names())",
    )
    return {
        **{fe.name: fe for fe in entities.values()},
        "entities": list(entities.values()),
        "source": source,
        "views": views,
        "service": service,
    }


def objects(built: dict[str, Any]) -> list[object]:
    """The list to pass to FeatureStore.apply()."""
    return [*built["entities"], built["source"], *built["views"], built["service"]]
