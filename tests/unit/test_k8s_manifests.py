"""Offline checks of the Kubernetes deployment (infra/k8s/, infra/docker/).

- Every manifest validates, strictly (unknown fields rejected), against the Kubernetes OpenAPI
  schemas (PyPI kubernetes-validate) and the operators' CRD schemas (infra/k8s/schemas/),
  and the validator provably rejects broken manifests.
- No manifest holds a secret value; every secret reaches the pods from the Secret
  ffs-secrets through env vars that ffs/config.py really reads.
- The manifests agree with the project's configuration and with each other (the ConfigMap
  loads with load_config, Services select their pods, ports and paths match the config, the
  Spark jobs' arguments parse with the `ffs` parser, the Dockerfile copies what exists).

No cluster, no Docker engine and no network: what this does NOT prove is in infra/k8s/README.md.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from ffs.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
DOCKER = ROOT / "infra" / "docker"
SECRET_NAME = "ffs-secrets"
IMAGE_DIR_SPARK_KAFKA = "/opt/ffs/jars/spark-kafka"
# applied on purpose, not by `kubectl apply -k` (infra/k8s/kustomization.yaml says why)
APPLIED_SEPARATELY = {"backfill.yaml", "pinot-apply-job.yaml", "secret.example.yaml"}
# env vars the project reads that are not FFS_<SECTION>_<KEY> settings
NON_SETTING_ENV = {"FFS_CONFIG", "FFS_JVM_DIR"}
SECRETISH = re.compile(r"PASSWORD|PASSWD|TOKEN|API_?KEY|SECRET|AUTH", re.I)


def _load_validator():
    spec = importlib.util.spec_from_file_location("ffs_k8s_validate", K8S / "validate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


V = _load_validator()
FILES = V.manifest_files()
DOCS = [doc for path in FILES for doc in V.load_documents(path)]


@pytest.fixture(scope="module")
def validator():
    """The validator, or a failure (not a skip) naming the fix when a piece is missing."""
    for module, package in (("kubernetes_validate", "kubernetes-validate"),
                            ("jsonschema", "jsonschema")):
        try:
            importlib.import_module(module)
        except ImportError:
            pytest.fail(f"the Python package {package} is missing, so the Kubernetes manifests "
                        f"cannot be validated: run `make setup` (it installs the `test` extra "
                        f"of pyproject.toml)", pytrace=False)
    return V


def find(kind: str, name: str | None = None) -> list[dict]:
    return [d.body for d in DOCS if d.body.get("kind") == kind
            and (name is None or d.body["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict:
    found = find(kind, name)
    assert len(found) == 1, f"expected one {kind}/{name} under infra/k8s, found {len(found)}"
    return copy.deepcopy(found[0])


def walk(node, path: str = "") -> Iterator[tuple[str, object, object]]:
    """(path, key, value) of every mapping entry, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def env_entries() -> Iterator[tuple[str, dict]]:
    """Every container env entry in every manifest (Deployments, StatefulSets, Jobs,
    SparkApplication drivers/executors/init containers), with where it is."""
    for doc in DOCS:
        for path, key, value in walk(doc.body):
            if key == "env" and isinstance(value, list):
                for entry in value:
                    if isinstance(entry, dict) and "name" in entry:
                        yield f"{doc.label}{path}", entry


def setting_env_names() -> tuple[set[str], set[str]]:
    """(every FFS_<SECTION>_<KEY> load_config reads, those whose value is a Secret)"""
    names, secrets = set(), set()
    cfg = Config()
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            name = f"FFS_{section.name}_{f.name}".upper()
            names.add(name)
            if "Secret" in str(f.type):
                secrets.add(name)
    return names, secrets


def example_secret_keys() -> set[str]:
    (secret,) = [d.body for d in DOCS if d.body.get("kind") == "Secret"]
    return set(secret["stringData"])


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """The ConfigMap's ffs.yaml, loaded as every pod loads it (no environment overrides)."""
    path = tmp_path_factory.mktemp("ffs-config") / "ffs.yaml"
    path.write_text(one("ConfigMap", "ffs-config")["data"]["ffs.yaml"])
    return load_config(path, env={})


# ---- schema validation ------------------------------------------------------------------

def test_manifests_were_found():
    kinds = {d.body["kind"] for d in DOCS}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "StatefulSet", "Job", "SparkApplication", "Kafka", "KafkaNodePool",
            "KafkaTopic", "KafkaUser", "ServiceMonitor"} <= kinds


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(K8S).as_posix() for p in FILES])
def test_manifest_validates(validator, path):
    count, errors = validator.validate_files([path])
    assert count > 0, f"{path} holds no YAML document"
    assert not errors, "\n".join(errors)


CUSTOM_KINDS = {("sparkoperator.k8s.io", "v1beta2", "SparkApplication"),
                ("kafka.strimzi.io", "v1", "Kafka"), ("kafka.strimzi.io", "v1", "KafkaNodePool"),
                ("kafka.strimzi.io", "v1", "KafkaTopic"), ("kafka.strimzi.io", "v1", "KafkaUser"),
                ("monitoring.coreos.com", "v1", "ServiceMonitor")}


def test_every_custom_kind_is_checked_against_its_crd_schema():
    used = set()
    for doc in DOCS:
        group, _, version = doc.body["apiVersion"].rpartition("/")
        if group in V.crd_groups():
            used.add((group, version, doc.body["kind"]))
    assert used == CUSTOM_KINDS
    for group, version, kind in CUSTOM_KINDS:
        schema = V.crd_schema(group, version, kind)
        assert schema is not None, f"no schema for {kind} {group}/{version}"
        assert "generated by infra/k8s/schemas/generate.py from https://github.com/" in \
            schema["$comment"] and " tag " in schema["$comment"]
        assert schema["additionalProperties"] is False  # strict at the root
        assert schema["properties"]["spec"]["additionalProperties"] is False


def _set(path: str, value) -> Callable[[dict], None]:
    def mutate(body: dict) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
    return mutate


def _drop(path: str) -> Callable[[dict], None]:
    def mutate(body: dict) -> None:
        *parents, last = path.split(".")
        node = body
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        del node[last]
    return mutate


BROKEN = [
    # (kind, name, mutation, what the error says)
    ("Deployment", "ffs-serve", _set("spec.replicas", "two"), "is not of type"),
    ("Deployment", "ffs-serve", _drop("spec.selector"), "'selector' is a required property"),
    ("Deployment", "ffs-serve",
     _set("spec.template.spec.containers.0.imagePullPolcy", "Always"), "was unexpected"),
    ("Deployment", "ffs-serve", _set("metadata.labels.tier", 1), "is not of type"),
    ("Service", "ffs-serve", _set("kind", "Servce"), "no schema"),
    ("HorizontalPodAutoscaler", "ffs-serve",
     _set("spec.metrics.0.resource.target.averageUtilization", "60"), "is not of type"),
    ("PodDisruptionBudget", "ffs-serve", _set("spec.minAvailble", 1), "was unexpected"),
    ("SparkApplication", "ffs-stream", _drop("spec.mainApplicationFile"),
     "'mainApplicationFile' is a required property"),
    ("SparkApplication", "ffs-stream", _set("spec.driver.cores", "2"), "is not of type"),
    ("SparkApplication", "ffs-stream", _set("spec.restartPolicy.retries", 3), "was unexpected"),
    ("SparkApplication", "ffs-stream", _set("spec.type", "Go"), "is not one of"),
    ("SparkApplication", "ffs-backfill", _set("metadata.lables", {}), "was unexpected"),
    ("Kafka", "ffs", _drop("spec.kafka.listeners.0.tls"), "'tls' is a required property"),
    ("Kafka", "ffs", _set("apiVersion", "kafka.strimzi.io/v1beta2"), "no schema"),
    ("KafkaNodePool", "broker", _set("spec.roles", ["brokr"]), "is not one of"),
    ("KafkaTopic", "ffs-labels", _set("spec.partitions", "12"), "is not of type"),
    ("KafkaUser", "ffs-app", _set("spec.authorization.acls.0.operation", "Read"),
     "was unexpected"),
    ("ServiceMonitor", "ffs-serve", _drop("spec.endpoints"),
     "'endpoints' is a required property"),
    ("ServiceMonitor", "ffs-stream", _set("spec.endpoints.0.interval", 15), "is not of type"),
]


@pytest.mark.parametrize("kind,name,mutate,expected", BROKEN,
                         ids=[f"{k}-{n}-{i}" for i, (k, n, _, _) in enumerate(BROKEN)])
def test_validator_rejects_a_broken_manifest(validator, kind, name, mutate, expected):
    body = one(kind, name)
    assert validator.validate_document(body) == []
    mutate(body)
    errors = validator.validate_document(body)
    assert errors, f"the validator accepted a broken {kind}/{name}"
    assert any(expected in e for e in errors), errors


def test_validator_rejects_broken_files(validator, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: [1]}\n"
                   "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: y}\n"
                   "spec: {selector: {matchLabels: {a: b}}}\n")
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("kind: [unclosed\n")
    count, errors = validator.validate_files([bad, broken_yaml])
    assert count == 2
    assert any("ConfigMap/x" in e and "data.a" in e for e in errors), errors
    assert any("Deployment/y" in e and "'template' is a required property" in e
               for e in errors), errors
    assert any("not YAML" in e for e in errors), errors
    assert validator.main([str(bad)]) == 1
    assert validator.main([]) == 0  # the committed manifests
    assert "OK" in capsys.readouterr().out


# ---- secrets ----------------------------------------------------------------------------

def test_the_four_secret_settings_exist_and_come_from_the_secret():
    names, secrets = setting_env_names()
    assert secrets == {"FFS_REDIS_PASSWORD", "FFS_KAFKA_SASL_PASSWORD", "FFS_SERVE_API_KEY",
                       "FFS_PINOT_TOKEN"} and secrets <= names
    used = {entry["name"] for _, entry in env_entries()}
    assert secrets <= used, f"never given to a pod: {sorted(secrets - used)}"
    keys = example_secret_keys()
    for where, entry in env_entries():
        name = entry["name"]
        if name.startswith("FFS_"):
            assert name in names | NON_SETTING_ENV, \
                f"{where}: {name} is not a setting ffs/config.py reads"
        if name in secrets or SECRETISH.search(name):
            assert "value" not in entry, f"{where}: {name} has a literal value"
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            assert ref, f"{where}: {name} must come from a secretKeyRef"
            assert ref["name"] == SECRET_NAME and ref["key"] in keys, f"{where}: {ref}"


def test_every_reference_to_the_secret_names_a_documented_key():
    keys = example_secret_keys()
    refs = 0
    for doc in DOCS:
        for path, key, value in walk(doc.body):
            if (key in ("secretKeyRef", "credentials") and isinstance(value, dict)
                    and value.get("name") == SECRET_NAME):
                refs += 1
                assert value["key"] in keys, f"{doc.label}{path}: unknown key {value['key']}"
    assert refs >= 8


PLACEHOLDER = re.compile(r"^(<REPLACE[^>]*>)?$")
SECRET_FIELD = re.compile(r"(?i)(password|passwd|secret|token|api[-_]?key|credentials?)$")


def test_no_manifest_holds_a_secret_value():
    for doc in DOCS:
        if doc.body["kind"] == "Secret":
            assert doc.path.name == "secret.example.yaml", f"{doc.label}: a Secret manifest"
            assert "data" not in doc.body
            for key, value in doc.body["stringData"].items():
                assert PLACEHOLDER.match(value), f"{doc.label}: {key} is not a placeholder"
            continue
        for path, key, value in walk(doc.body):
            if isinstance(key, str) and SECRET_FIELD.search(key) and isinstance(value, str):
                assert not value.strip(), f"{doc.label}{path}: literal value for {key}"
    values = yaml.safe_load((K8S / "pinot" / "values.yaml").read_text())
    for path, key, value in walk(values):
        if isinstance(key, str) and SECRET_FIELD.search(key) and isinstance(value, str):
            pytest.fail(f"pinot/values.yaml{path}: literal value for {key}")


def test_no_secret_looking_text_anywhere():
    files = [p for p in K8S.rglob("*.yaml") if "schemas" not in p.relative_to(K8S).parts]
    for path in [*files, DOCKER / "Dockerfile", DOCKER / "entrypoint.sh"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{n}"
            assert "-----BEGIN" not in line, f"{where}: a key or certificate"
            if line.lstrip().startswith("#"):
                continue
            assert not re.search(r"://[^/\s:@]*:[^@\s/]+@", line), f"{where}: password in URL"
            assert not re.search(r"requirepass\s+[^\s\"%]", line), f"{where}: literal requirepass"


def test_the_config_map_holds_no_secret(cfg):
    assert cfg.redis.password is None and cfg.kafka.sasl_password is None
    assert cfg.serve.api_key is None and cfg.pinot.token is None


# ---- wiring ------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest_but_the_ones_applied_on_purpose():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"] == "ffs"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists a missing {name}"
    files = {p.relative_to(K8S).as_posix() for p in FILES}
    assert files == set(listed) | APPLIED_SEPARATELY
    assert all(d.body["metadata"].get("namespace") in ("ffs", None) for d in DOCS)
    assert all(d.body["metadata"]["namespace"] == "ffs" for d in DOCS
               if d.body["kind"] != "Namespace")


def test_the_config_map_is_a_valid_ffs_config(cfg):
    assert cfg.serve.host == "0.0.0.0" and cfg.serve.port == 6566
    assert cfg.stream.metrics_port == 9108
    assert cfg.spark.master.startswith("k8s://")
    assert cfg.spark.jars == "", "the image puts the Kafka connector on the classpath itself"
    topics = {t["spec"]["topicName"] for t in find("KafkaTopic")}
    assert topics == {cfg.kafka.transactions_topic, cfg.kafka.labels_topic,
                      cfg.kafka.enriched_topic, cfg.kafka.dead_letter_topic} == \
        {"ffs.transactions", "ffs.labels", "ffs.enriched", "ffs.dead-letters"}
    for topic in find("KafkaTopic"):
        assert topic["spec"]["partitions"] >= 1 and "retention.ms" in topic["spec"]["config"]


def test_feature_server(cfg):
    dep = one("Deployment", "ffs-serve")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["serve", "--host", "0.0.0.0", "--port", str(cfg.serve.port)]
    assert c["ports"][0] == {"name": "http", "containerPort": cfg.serve.port, "protocol": "TCP"}
    env = {e["name"]: e for e in c["env"]}
    config_mount = Path(env["FFS_CONFIG"]["value"]).parent.as_posix()
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[config_mount]]["configMap"]["name"] == "ffs-config"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    probe = c["readinessProbe"]["exec"]["command"]
    assert "/ready" in probe[-1] and "FFS_SERVE_API_KEY" in probe[-1]
    assert f":{cfg.serve.port}/ready" in probe[-1]
    compile(probe[-1], "readinessProbe", "exec")  # the one-liner is valid Python
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][part]), part
    labels = pod_labels(dep)
    assert selects(dep["spec"]["selector"]["matchLabels"], labels)
    svc = one("Service", "ffs-serve")
    assert selects(svc["spec"]["selector"], labels)
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    hpa = one("HorizontalPodAutoscaler", "ffs-serve")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "ffs-serve"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    pdb = one("PodDisruptionBudget", "ffs-serve")
    assert pdb["apiVersion"] == "policy/v1"
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    sm = one("ServiceMonitor", "ffs-serve")
    assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": SECRET_NAME,
                                                        "key": "serve-api-key"}


def _pyspark_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"pyspark==([0-9.]+)"', text)
    assert match, "pyproject.toml pins pyspark exactly (the Kafka connector matches it)"
    return match.group(1)


def _mounts(pod: dict, app: dict) -> dict[str, dict]:
    volumes = {v["name"]: v for v in app["spec"]["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in pod.get("volumeMounts", [])}


@pytest.mark.parametrize("name", ["ffs-stream", "ffs-backfill"])
def test_spark_applications(cfg, name):
    from ffs.cli import build_parser

    app = one("SparkApplication", name)
    spec = app["spec"]
    build_parser().parse_args(spec["arguments"])  # `ffs` accepts them (exits 2 otherwise)
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    assert spec["mainApplicationFile"] == "local:///opt/ffs/app/spark_main.py"
    assert "COPY infra/docker/spark_main.py /opt/ffs/app/spark_main.py" in \
        (DOCKER / "Dockerfile").read_text()
    assert spec["sparkVersion"] == _pyspark_pin()
    serve_image = one("Deployment", "ffs-serve")["spec"]["template"]["spec"]["containers"][0]
    assert spec["image"] == serve_image["image"]
    driver, executor = spec["driver"], spec["executor"]
    assert driver["memory"] == cfg.spark.driver_memory
    for part in (driver, executor):
        assert {"cores", "memory", "memoryOverhead"} <= set(part)
    sa = one("ServiceAccount", driver["serviceAccount"])["metadata"]["name"]
    binding = one("RoleBinding", "ffs-spark-driver")
    assert {"kind": "ServiceAccount", "name": sa, "namespace": "ffs"} in binding["subjects"]
    env = {e["name"]: e for e in driver["env"]}
    config_dir = Path(env["FFS_CONFIG"]["value"]).parent.as_posix()
    assert _mounts(driver, app)[config_dir]["configMap"]["name"] == "ffs-config"
    retry = spec["restartPolicy"]
    assert retry["type"] == "Always" or (retry["type"] == "OnFailure"
                                         and retry.get("onFailureRetries", 0) > 0)


def test_stream_application(cfg, tmp_path):
    app = one("SparkApplication", "ffs-stream")
    spec, driver = app["spec"], app["spec"]["driver"]
    assert spec["arguments"][0] == "stream"
    assert spec["restartPolicy"]["type"] == "Always"
    for key in ("spark.driver.extraClassPath", "spark.executor.extraClassPath"):
        assert f"{IMAGE_DIR_SPARK_KAFKA}/*" in spec["sparkConf"][key].split(":")
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert IMAGE_DIR_SPARK_KAFKA in dockerfile and ".jvm/spark-kafka.classpath" in dockerfile
    # the checkpoint lives on the PVC mounted in the driver
    mounts = _mounts(driver, app)
    (base,) = [m for m in mounts if cfg.stream.checkpoint.startswith(m.rstrip("/") + "/")]
    assert mounts[base]["persistentVolumeClaim"]["claimName"] == "ffs-stream-checkpoint"
    # metrics: the driver binds 0.0.0.0:metrics_port -> its container port -> Service ->
    # ServiceMonitor (no forwarding sidecar)
    assert cfg.stream.metrics_host == "127.0.0.1", "only the stream's driver binds 0.0.0.0"
    literal_env = {e["name"]: e["value"] for e in driver["env"] if "value" in e}
    assert literal_env["FFS_STREAM_METRICS_HOST"] == "0.0.0.0"
    config = tmp_path / "ffs.yaml"
    config.write_text(one("ConfigMap", "ffs-config")["data"]["ffs.yaml"])
    driver_cfg = load_config(config, env=literal_env)  # the driver's view of the config
    assert driver_cfg.stream.metrics_host == "0.0.0.0"
    port = driver_cfg.stream.metrics_port
    assert port > 0
    (container_port,) = [p for p in driver["ports"] if p["name"] == "metrics"]
    assert container_port == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    assert "initContainers" not in driver and "sidecars" not in driver
    svc = one("Service", "ffs-stream-metrics")
    assert selects(svc["spec"]["selector"], {**driver["labels"], "spark-role": "driver"})
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] in (port, container_port["name"]) and svc_port["port"] == port
    sm = one("ServiceMonitor", "ffs-stream")
    assert selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["spec"]["endpoints"][0]["port"] == svc_port["name"]
    assert "socat" not in dockerfile


def test_backfill_application(cfg):
    app = one("SparkApplication", "ffs-backfill")
    spec, driver, executor = app["spec"], app["spec"]["driver"], app["spec"]["executor"]
    assert spec["arguments"][0] == "backfill"
    claim = {"persistentVolumeClaim": {"claimName": "ffs-data"}}
    data = [m for m, v in _mounts(driver, app).items() if v.get("persistentVolumeClaim")]
    assert data == ["/data"] and _mounts(executor, app)["/data"] == {"name": "data", **claim}
    assert cfg.offline.path.startswith("/data/")
    assert {e["name"]: e.get("value") for e in driver["env"]}["TMPDIR"].startswith("/data")
    pvc = one("PersistentVolumeClaim", "ffs-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kafka(cfg):
    kafka = one("Kafka", "ffs")
    cluster = kafka["metadata"]["name"]
    pools = find("KafkaNodePool")
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == cluster for p in pools)
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}  # KRaft, no ZooKeeper
    host, port = cfg.kafka.bootstrap_servers.rsplit(":", 1)
    assert host.split(".")[0] == f"{cluster}-kafka-bootstrap"
    listener = {str(li["port"]): li for li in kafka["spec"]["kafka"]["listeners"]}[port]
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert cfg.kafka.security_protocol == ("SASL_SSL" if listener["tls"] else "SASL_PLAINTEXT")
    assert cfg.kafka.sasl_mechanism == "SCRAM-SHA-512"
    # Strimzi's cluster CA, where kafka.ssl_ca_location says, in every pod that reads Kafka
    ca_secret, ca_dir = f"{cluster}-cluster-ca-cert", Path(cfg.kafka.ssl_ca_location).parent
    assert listener["tls"] and Path(cfg.kafka.ssl_ca_location).name == "ca.crt"
    stream = one("SparkApplication", "ffs-stream")
    for pod in (stream["spec"]["driver"], stream["spec"]["executor"]):
        assert _mounts(pod, stream)[ca_dir.as_posix()]["secret"]["secretName"] == ca_secret
    server = yaml.safe_load((K8S / "pinot" / "values.yaml").read_text())["server"]
    (mount,) = server["persistence"]["extraVolumeMounts"]
    (volume,) = server["persistence"]["extraVolumes"]
    assert mount["mountPath"] == ca_dir.as_posix() and mount["name"] == volume["name"]
    assert volume["secret"]["secretName"] == ca_secret
    user = one("KafkaUser", cfg.kafka.sasl_username)
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    assert user["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"] == {
        "name": SECRET_NAME, "key": "kafka-sasl-password"}
    for topic in find("KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        name = topic["spec"]["topicName"]
        ops = set()
        for acl in user["spec"]["authorization"]["acls"]:
            r = acl["resource"]
            if r["type"] == "topic" and (r["name"] == name or r.get("patternType") == "prefix"
                                         and name.startswith(r["name"])):
                ops |= set(acl["operations"])
        assert {"Read", "Write", "Describe"} <= ops, f"ffs-app cannot use {name}"


def test_redis(cfg):
    sts = one("StatefulSet", "ffs-redis")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    assert "$REDIS_PASSWORD" in c["args"][0] and "requirepass" in c["args"][0]
    conf = one("ConfigMap", "ffs-redis-config")["data"]["redis.conf"]
    assert "appendonly yes" in conf and "maxmemory-policy noeviction" in conf
    assert "include /run/redis/auth.conf" in conf
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    svc = one("Service", "ffs-redis")
    assert selects(svc["spec"]["selector"], pod_labels(sts))
    assert cfg.redis.url == f"redis://ffs-redis.ffs.svc:{svc['spec']['ports'][0]['port']}/0"


def test_pinot(cfg, tmp_path):
    from ffs.cli import build_parser, main

    job = one("Job", "ffs-pinot-apply")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert f"ffs pinot apply --artifacts /tmp/pinot --controller {cfg.pinot.controller_url}" \
        in c["args"][0] and "ffs pinot generate --out /tmp/pinot" in c["args"][0]
    for command in c["args"][0].split("&&"):
        argv = shlex.split(command)
        assert argv[0] == "ffs"
        build_parser().parse_args(argv[1:])
    assert cfg.pinot.controller_url.startswith("http://pinot-controller.")
    assert cfg.pinot.broker_url.startswith("http://pinot-broker.")
    # what the Job generates from this config: Kafka over TLS with the CA Pinot's servers
    # mount, and the SASL password left as a placeholder
    config = tmp_path / "ffs.yaml"
    config.write_text(one("ConfigMap", "ffs-config")["data"]["ffs.yaml"])
    assert main(["--config", str(config), "pinot", "generate", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "ffs_enriched.table.json").read_text()
    assert cfg.kafka.bootstrap_servers in text and cfg.kafka.ssl_ca_location in text
    assert "${KAFKA_SASL_PASSWORD}" in text


FREE_FORM = {"resources", "podAnnotations", "nodeSelector", "affinity", "tolerations",
             "securityContext", "podSecurityContext", "extraEnv", "envFrom", "annotations"}


def _key_paths(node: dict, prefix: tuple = ()) -> Iterator[tuple[str, ...]]:
    for key, value in node.items():
        yield (*prefix, key)
        if isinstance(value, dict) and key not in FREE_FORM:
            yield from _key_paths(value, (*prefix, key))


def test_pinot_values_use_only_keys_of_the_chart():
    ours = yaml.safe_load((K8S / "pinot" / "values.yaml").read_text())
    chart = yaml.safe_load((K8S / "schemas" / "pinot-chart-values-1.0.0.yaml").read_text())
    for path in _key_paths(ours):
        node = chart
        for key in path:
            assert isinstance(node, dict) and key in node, \
                f"pinot/values.yaml: {'.'.join(path)} is not a value of the Pinot chart"
            node = node[key]
    pom = (ROOT / "infra" / "jvm" / "pom.xml").read_text()
    pinot_version = re.search(r"<pinot\.version>([^<]+)</pinot\.version>", pom).group(1)
    assert ours["image"]["tag"] == pinot_version, \
        "Pinot's image must be the Pinot the table configs are generated for"
    for part in ("controller", "broker", "server", "zookeeper"):
        assert "replicaCount" in ours[part]
    for part in ("controller", "broker", "server"):
        assert "-Xmx" in ours[part]["jvmOpts"]
    assert ours["zookeeper"]["heapSize"]


# ---- the image --------------------------------------------------------------------------

def test_dockerfile():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert "openjdk-17-jre-headless" in text and "bash infra/jvm.sh" in text
    assert "pip install ." in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \[.*"/opt/ffs/entrypoint.sh"\]', text, re.M)
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for src in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", text, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"the Dockerfile copies a missing {item}"
            assert f"!{item}" in ignore, f"Dockerfile.dockerignore leaves {item} out"
    entry = (DOCKER / "entrypoint.sh").read_text()
    assert 'exec ffs "$@"' in entry
    assert "KubernetesExecutorBackend" in entry and "spark-submit" in entry
    subprocess.run(["bash", "-n", str(DOCKER / "entrypoint.sh")], check=True)
    compile((DOCKER / "spark_main.py").read_text(), "spark_main.py", "exec")
