"""The JVM parts are declared once (infra/jvm/pom.xml) and what setup resolved matches it:
the Spark connector's version is the installed pyspark's, and each module's classpath holds
the pinned artifact. A checkout without them says how to get them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ffs import jvm
from ffs.errors import TerminalError

ROOT = Path(__file__).resolve().parents[2]
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pinned() -> dict[str, str]:
    props = ET.parse(ROOT / "infra" / "jvm" / "pom.xml").getroot().find("m:properties", NS)
    return {el.tag.split("}")[1]: el.text for el in props}


def test_pyspark_is_pinned_to_the_connectors_spark_version():
    import pyspark

    spark = pinned()["spark.version"]
    declared = re.search(r'"pyspark==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert declared and declared.group(1) == spark
    assert pyspark.__version__ == spark


@pytest.mark.parametrize("module, jar", [
    ("kafka", "kafka_2.13-{kafka.version}.jar"),
    ("spark-kafka", "spark-sql-kafka-0-10_2.13-{spark.version}.jar"),
    ("pinot", "pinot-tools-{pinot.version}.jar"),
])
def test_each_resolved_classpath_holds_its_pinned_artifact(module, jar):
    want = re.sub(r"\{([^}]+)\}", lambda m: pinned()[m.group(1)], jar)
    names = [Path(p).name for p in jvm.jars(module)]
    assert want in names
    assert all(Path(p).exists() for p in jvm.jars(module))


def test_spark_jars_are_only_what_pyspark_lacks():
    """No second Scala or Spark on the driver's classpath (the wheel brings its own)."""
    names = [Path(p).name for p in jvm.jars("spark-kafka")]
    assert not [n for n in names if n.startswith(("scala-library", "spark-core", "hadoop"))]


def test_a_checkout_without_resolved_parts_says_run_make_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("FFS_JVM_DIR", str(tmp_path))
    with pytest.raises(TerminalError, match="make setup"):
        jvm.jars("kafka")
    (tmp_path / "kafka.classpath").write_text(str(tmp_path / "gone.jar"))
    with pytest.raises(TerminalError, match="gone from the Maven cache"):
        jvm.jars("kafka")
    with pytest.raises(ValueError, match="unknown JVM module"):
        jvm.jars("flink")
