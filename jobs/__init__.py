"""Batch jobs: Spark at the edge, pure feature logic from `transformations`."""
