"""The product's jobs, by concern: batch (backfill, training sets, the offline store, Spark),
stream (the Structured Streaming job and its micro-batch), tools (apply, consistency,
the generator) and demo."""
