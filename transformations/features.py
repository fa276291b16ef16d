"""The declarations of the feature repo this process runs, loaded once at import
(transformations/repo.py: compiled from the repo's Feast objects, cached): every engine reads
its features from here. The types come from transformations/declarations.py and are
re-exported for the engines' convenience.
"""

from __future__ import annotations

from datetime import timedelta

from ffs.transformations import repo as _repo
from ffs.transformations.declarations import (
    Agg,
    Entity,
    RecencyFeature,
    RequestFeature,
    WindowFeature,
    human,
)
from ffs.transformations.request import RequestFunction

__all__ = ["Agg", "Entity", "RecencyFeature", "RequestFeature", "WindowFeature", "human",
           "COMPILED", "FEATURE_SERVICE", "WINDOW_FEATURES", "RECENCY_FEATURES",
           "REQUEST_FEATURES", "REQUEST_FUNCTIONS", "feature_names", "feature_dtypes",
           "windows_for", "recency_for", "entity_feature_names", "retention", "ENTITIES",
           "KEY_COLUMNS", "VALUE_COLUMNS", "INPUT_COLUMNS", "OPTIONAL_COLUMNS",
           "DERIVED_FUNCTIONS", "entity"]

COMPILED = _repo.load()
FEATURE_SERVICE: str = COMPILED.service
WINDOW_FEATURES: tuple[WindowFeature, ...] = tuple(COMPILED.windows)
RECENCY_FEATURES: tuple[RecencyFeature, ...] = tuple(COMPILED.recency)
REQUEST_FEATURES: tuple[RequestFeature, ...] = tuple(COMPILED.request)
REQUEST_FUNCTIONS: tuple[RequestFunction, ...] = tuple(COMPILED.functions)
ENTITIES: tuple[Entity, ...] = tuple(COMPILED.entities)
# every join key the entities read, in their order, and the value columns the windows read
KEY_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(k for e in ENTITIES for k in e.keys))
VALUE_COLUMNS: dict[str, str] = dict(COMPILED.values)
# of those, the ones events arrive with (the rest are derived by the views' udfs), and the
# ones that may be null
INPUT_COLUMNS: dict[str, str] = COMPILED.input_values
OPTIONAL_COLUMNS: frozenset[str] = frozenset(COMPILED.optional)
DERIVED_FUNCTIONS: tuple[RequestFunction, ...] = tuple(COMPILED.derived)


def feature_names() -> list[str]:
    """All feature columns, in the order every engine returns them (the service's order:
    request features, then windows, then recency)."""
    return ([f.name for f in REQUEST_FEATURES] + [f.name for f in WINDOW_FEATURES]
            + [f.name for f in RECENCY_FEATURES])


def feature_dtypes() -> dict[str, str]:
    out = {f.name: f.dtype for f in REQUEST_FEATURES}
    out.update({f.name: f.dtype for f in WINDOW_FEATURES})
    out.update({f.name: f.dtype for f in RECENCY_FEATURES})
    return out


def entity(name: str | Entity) -> Entity:
    """The repo's entity of that name (a composite one is named "a+b")."""
    if isinstance(name, Entity):
        return name
    for e in ENTITIES:
        if e.name == name:
            return e
    raise KeyError(f"the feature repo declares no entity {name!r} "
                   f"(it has {[e.name for e in ENTITIES]})")


def windows_for(entity: Entity) -> list[WindowFeature]:
    return [f for f in WINDOW_FEATURES if f.entity == entity]


def recency_for(entity: Entity) -> list[RecencyFeature]:
    return [r for r in RECENCY_FEATURES if r.entity == entity]


def entity_feature_names(entity: Entity) -> list[str]:
    """The features read from one entity's state: its windows, then its recency features."""
    return [f.name for f in windows_for(entity)] + [r.name for r in recency_for(entity)]


def retention(entity: Entity) -> timedelta:
    """How long an event can still affect a feature of this entity: longest window + delay."""
    spans = [f.window + f.delay for f in windows_for(entity)]
    spans += [r.horizon for r in RECENCY_FEATURES if r.entity == entity]
    return max(spans) if spans else timedelta(0)
