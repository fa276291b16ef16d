"""Shared foundations of the product: configuration, errors, JVM processes, networking."""

# prometheus_client picks how metric values are stored once, when it is first imported:
# importing feast.metrics sets PROMETHEUS_MULTIPROC_DIR, after which every value would live in
# shared files and two apps of one process (the HTTP server's per-app registry, the stream's)
# would count each other's requests. Importing it first keeps values in process, unless the
# operator sets PROMETHEUS_MULTIPROC_DIR on purpose.
import prometheus_client.values  # noqa: F401
