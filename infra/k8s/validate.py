"""Validate the Kubernetes manifests under infra/k8s/ offline: no cluster, no network.

    .venv/bin/python infra/k8s/validate.py            # every manifest; exit 1 on any error
    .venv/bin/python infra/k8s/validate.py FILE...    # some files (any path)

- Built-in kinds (Deployment, Service, HorizontalPodAutoscaler, ...) are checked against the
  Kubernetes OpenAPI schemas that the PyPI package `kubernetes-validate` ships in its wheel,
  in their *strict* form (unknown fields rejected), for every version in
  KUBERNETES_VERSIONS.
- Custom resources (SparkApplication, Kafka, KafkaNodePool, KafkaTopic, KafkaUser,
  ServiceMonitor) are checked against the JSON schemas in schemas/, generated from the
  operators' CRDs (schemas/README.md), strict as well, and their metadata against
  Kubernetes' ObjectMeta.
- A document whose kind has no schema is an error, never a pass.

What it cannot check: CEL rules of the CRDs (x-kubernetes-validations), admission webhooks,
what the operators do with a valid resource, and anything that needs the cluster (names of
existing objects, storage classes, quotas). tests/unit/test_k8s_manifests.py adds the
project's own checks (config keys, secrets, wiring between the manifests).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
SCHEMAS = ROOT / "schemas"
# The oldest and newest Kubernetes minor versions the manifests are meant for; native
# sidecars (stream.yaml) need 1.29+, and kubernetes-validate 1.37.0 knows up to 1.37.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# YAML under ROOT that is not a Kubernetes manifest
NOT_MANIFESTS = {"kustomization.yaml", "pinot/values.yaml"}
MAX_ERRORS_PER_DOCUMENT = 8


class MissingValidator(RuntimeError):
    pass


@dataclass(frozen=True)
class Document:
    path: Path
    index: int  # position in a multi-document file
    body: dict

    @property
    def label(self) -> str:
        name = (self.body.get("metadata") or {}).get("name", "?")
        try:
            where = self.path.relative_to(ROOT)
        except ValueError:
            where = self.path
        return f"{where}#{self.index} {self.body.get('kind', '?')}/{name}"


def manifest_files(root: Path = ROOT) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.y*ml")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("schemas/") or rel in NOT_MANIFESTS:
            continue
        files.append(path)
    return files


def load_documents(path: Path) -> list[Document]:
    docs = []
    for i, body in enumerate(yaml.safe_load_all(path.read_text())):
        if body is None:
            continue
        docs.append(Document(path, i, body))
    return docs


def crd_groups() -> set[str]:
    return {p.name for p in SCHEMAS.iterdir() if p.is_dir()}


@lru_cache(maxsize=None)
def crd_schema(group: str, version: str, kind: str) -> dict | None:
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        raise MissingValidator(
            "the Python package kubernetes-validate is not installed in this environment: "
            "run `make setup` (it is in the project's `test` extra)") from None
    return kubernetes_validate


def _where(path: Iterable) -> str:
    return ".".join(str(p) for p in path) or "(root)"


def validate_document(body: dict, versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Error messages for one manifest (empty when valid)."""
    if not isinstance(body, dict):
        return [f"not a mapping: {type(body).__name__}"]
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must be strings"]
    group, _, version = api_version.rpartition("/")
    if group in crd_groups():
        return _validate_custom(body, group, version, kind, versions)
    return _validate_builtin(body, versions)


def _validate_builtin(body: dict, versions: Iterable[str]) -> list[str]:
    kv = _kubernetes_validate()
    errors: list[str] = []
    for version in versions:
        try:
            kv.validate(body, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"Kubernetes {version}: {_where(exc.absolute_path)}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"Kubernetes {version}: no schema: {exc.message}")
    return errors


def _validate_custom(body: dict, group: str, version: str, kind: str,
                     versions: Iterable[str]) -> list[str]:
    import jsonschema

    schema = crd_schema(group, version, kind)
    if schema is None:
        known = sorted(p.name for p in (SCHEMAS / group).glob("*.json"))
        return [f"no schema for {kind} {group}/{version} in {SCHEMAS / group} (have: {known})"]
    validator = jsonschema.Draft7Validator(schema)
    found = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    errors = [f"{group}/{version} {kind}: {_where(e.absolute_path)}: {e.message}"
              for e in found[:MAX_ERRORS_PER_DOCUMENT]]
    if len(found) > MAX_ERRORS_PER_DOCUMENT:
        errors.append(f"... and {len(found) - MAX_ERRORS_PER_DOCUMENT} more")
    # The CRD schemas say only `metadata: object`; the API server applies ObjectMeta. A
    # ConfigMap with nothing but that metadata is checked against exactly ObjectMeta.
    if isinstance(body.get("metadata"), dict):
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": body["metadata"]}
        errors += [e.replace("ConfigMap", kind) for e in _validate_builtin(probe, versions)]
    return errors


def validate_files(paths: Iterable[Path]) -> tuple[int, list[str]]:
    """(documents checked, error lines)"""
    count, errors = 0, []
    for path in paths:
        try:
            docs = load_documents(path)
        except yaml.YAMLError as exc:
            errors.append(f"{path}: not YAML: {exc}")
            continue
        for doc in docs:
            count += 1
            errors += [f"{doc.label}: {e}" for e in validate_document(doc.body)]
    return count, errors


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a).resolve() for a in args] or manifest_files()
    try:
        count, errors = validate_files(paths)
    except MissingValidator as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in errors:
        print(line)
    kinds = ", ".join(sorted(crd_groups()))
    print(f"{count} documents in {len(paths)} files: "
          f"{'OK' if not errors else f'{len(errors)} error(s)'} "
          f"(Kubernetes {', '.join(KUBERNETES_VERSIONS)}, strict; CRD groups: {kinds})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
