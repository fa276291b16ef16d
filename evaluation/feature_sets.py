"""Which features a run trains on: a feature service of the loaded repo, a list of features,
or both combined.

A spec is comma-separated items read left to right: a feature service's name adds its
features (in the service's order), a feature's name adds it, `-name` removes a feature (or
every feature of a service). `fraud_service,extra_feature` is a service plus one feature;
`fraud_service,-some_feature` the service without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ffs.errors import InputError


@dataclass(frozen=True)
class FeatureSet:
    spec: str  # as the user wrote it
    features: tuple[str, ...]


def resolve(spec: str, features: Sequence[str],
            services: Callable[[], Mapping[str, Sequence[str]]]) -> FeatureSet:
    """The features `spec` names. `features`: every feature the engine computes;
    `services()`: the repo's feature services by name (called only when an item is not a
    feature)."""
    known = set(features)
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise InputError(f"empty feature set {spec!r}: name a feature service of the repo "
                         "or features, comma-separated")
    chosen: list[str] = []
    loaded: Mapping[str, Sequence[str]] | None = None
    for item in items:
        remove = item.startswith("-")
        name = item[1:].strip() if remove else item
        if name in known:
            names: Sequence[str] = [name]
        else:
            loaded = services() if loaded is None else loaded
            if name not in loaded:
                raise InputError(
                    f"feature set {spec!r}: {name!r} is neither a feature service nor a "
                    f"feature of the loaded repo; services: {sorted(loaded) or 'none'}, "
                    f"features: `ffs features` lists them")
            names = loaded[name]
        if remove:
            chosen = [n for n in chosen if n not in set(names)]
        else:
            chosen += [n for n in names if n not in chosen]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise InputError(f"feature set {spec!r}: the engine computes no feature {unknown} "
                         "(a service of another repo?)")
    if not chosen:
        raise InputError(f"feature set {spec!r} leaves no feature to train on")
    return FeatureSet(spec, tuple(chosen))


def repo_services(cfg) -> dict[str, list[str]]:
    """The loaded repo's feature services and their features, in the engines' column order
    (compiled with the repo: transformations/compiler.py, Compiled.services)."""
    from ffs.transformations import repo

    return {name: list(names) for name, names in repo.load(cfg).services.items()}
