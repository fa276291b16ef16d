"""Spark's primary resource for the ffs jobs on Kubernetes (`mainApplicationFile:
local:///opt/ffs/app/spark_main.py` in infra/k8s/backfill.yaml and stream.yaml).

spark-submit runs a Python application from a `.py` file; this one runs the `ffs` command with
the SparkApplication's `arguments` (e.g. `stream`, or `backfill --transactions ...`), and exits
with its exit code, so a refused batch or a lost service fails the application.
"""

import sys

from ffs.cli import main

if __name__ == "__main__":
    sys.exit(main())
