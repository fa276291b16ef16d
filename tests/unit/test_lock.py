"""requirements.lock (what `make setup` installs on every machine) agrees with what
pyproject.toml declares, and this venv holds exactly the locked versions."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line).groups()
            pins[canonicalize_name(name)] = version
    return pins


def declared() -> list[Requirement]:
    import tomllib  # 3.11+; the lock is made and checked on the Python that CI runs

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(r) for r in reqs]


def test_every_declared_dependency_is_locked_at_a_version_it_allows():
    pins = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not in requirements.lock: make lock"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{req.name}=={pins[name]} in the lock does not satisfy {req}: make lock"


def test_the_venv_holds_exactly_the_locked_versions():
    wrong = {}
    for name, version in locked().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (have, version)
    assert not wrong, f"installed vs locked: {wrong} (run make setup)"
