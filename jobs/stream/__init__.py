"""The streaming job: Spark's Kafka source (job.py), one micro-batch (batch.py), its event-only
rules (rules.py) and its Prometheus metrics (metrics.py)."""
