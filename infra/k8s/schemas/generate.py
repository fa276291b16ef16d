"""Regenerate the CRD JSON schemas in this folder from the operators' own CRD YAML.

    python infra/k8s/schemas/generate.py \
        --source kubeflow/spark-operator=PATH \
        --source strimzi/strimzi-kafka-operator=PATH \
        --source prometheus-operator/prometheus-operator=PATH

Each PATH is a git clone (bare or not) of that repository; the file is read at the pinned tag
with `git show TAG:PATH`, so the clone's checked-out branch does not matter. Output:
`{group}/{kind}_{version}.json`, the layout kubeconform's `-schema-location` templates use
(`{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json`).

The conversion (the same idea as kubeconform's openapi2jsonschema.py, written here):
- the version's `openAPIV3Schema`, with `description`, `example` and the `x-kubernetes-*`
  extensions dropped (they do not validate anything and are most of the size);
- strict: every `type: object` schema with `properties` and no `additionalProperties` gets
  `additionalProperties: false`, unless it has `x-kubernetes-preserve-unknown-fields`: an
  unknown or misspelt field is an error, as the API server's strict field validation says;
- `nullable: true` becomes a `"null"` alternative of the type; `x-kubernetes-int-or-string`
  without an `anyOf` becomes `oneOf: [string, integer]`;
- `apiVersion` and `kind` are pinned to the CRD's group/version and kind, and `metadata` is
  required (infra/k8s/validate.py checks it against Kubernetes' ObjectMeta schema).
CEL rules (`x-kubernetes-validations`) are not evaluated: no CEL interpreter offline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

# repository, tag, CRD file in the repository, versions to convert
SOURCES = [
    ("kubeflow/spark-operator", "v2.5.2",
     "config/crd/bases/sparkoperator.k8s.io_sparkapplications.yaml", ["v1beta2"]),
    ("strimzi/strimzi-kafka-operator", "1.2.0",
     "packaging/install/cluster-operator/040-Crd-kafka.yaml", ["v1"]),
    ("strimzi/strimzi-kafka-operator", "1.2.0",
     "packaging/install/cluster-operator/043-Crd-kafkatopic.yaml", ["v1"]),
    ("strimzi/strimzi-kafka-operator", "1.2.0",
     "packaging/install/cluster-operator/044-Crd-kafkauser.yaml", ["v1"]),
    ("strimzi/strimzi-kafka-operator", "1.2.0",
     "packaging/install/cluster-operator/045-Crd-kafkanodepool.yaml", ["v1"]),
    ("prometheus-operator/prometheus-operator", "v0.93.0",
     "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml", ["v1"]),
]

DROP = {"description", "example", "x-kubernetes-validations", "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "nullable"}
# keywords whose value is a map of name -> schema, or a list of schemas, or one schema
MAP_OF_SCHEMAS = {"properties", "patternProperties", "definitions"}
LIST_OF_SCHEMAS = {"anyOf", "oneOf", "allOf"}
ONE_SCHEMA = {"items", "additionalProperties", "not"}


def convert(node: dict) -> dict:
    out: dict = {}
    for key, value in node.items():
        if key in DROP:
            continue
        if key in MAP_OF_SCHEMAS:
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in LIST_OF_SCHEMAS:
            out[key] = [convert(sub) for sub in value]
        elif key in ONE_SCHEMA and isinstance(value, dict):
            out[key] = convert(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out and "oneOf" not in out:
        out.pop("type", None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (out.get("type") in ("object", ["object", "null"]) and "properties" in out
            and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def read(clone: Path, tag: str, path: str) -> tuple[str, str]:
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", f"{tag}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    text = subprocess.run(["git", "-C", str(clone), "show", f"{commit}:{path}"],
                          check=True, capture_output=True, text=True).stdout
    return commit, text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", action="append", default=[], metavar="OWNER/NAME=PATH",
                   help="a git clone of one of the repositories (repeat for each)")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args(argv)
    clones = dict(s.split("=", 1) for s in args.source)
    missing = sorted({repo for repo, *_ in SOURCES} - set(clones))
    if missing:
        p.error(f"--source needed for {', '.join(missing)}")
    for repo, tag, path, versions in SOURCES:
        commit, text = read(Path(clones[repo]), tag, path)
        crd = yaml.safe_load(text)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for entry in crd["spec"]["versions"]:
            if entry["name"] not in versions:
                continue
            version = entry["name"]
            schema = convert(entry["schema"]["openAPIV3Schema"])
            schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}"]}
            schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
            schema["required"] = sorted(set(schema.get("required", [])) |
                                        {"apiVersion", "kind", "metadata"})
            schema = {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "$comment": (f"{group}/{version} {kind}: generated by "
                             f"infra/k8s/schemas/generate.py from https://github.com/{repo} "
                             f"tag {tag} (commit {commit}), file {path}. Do not edit by hand."),
                **schema,
            }
            target = Path(args.out) / group / f"{kind.lower()}_{version}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
            print(f"wrote {target} ({target.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
