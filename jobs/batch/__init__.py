"""Batch jobs: backfill, training sets, the offline store, the Spark engine around the NumPy one."""
