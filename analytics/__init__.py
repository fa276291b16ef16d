"""Real-time analytics: analyst queries on Pinot or the embedded DuckDB store, and the dashboard."""
