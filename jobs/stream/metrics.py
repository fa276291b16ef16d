"""Prometheus metrics of `ffs stream` (served on stream.metrics_port at /metrics)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ffs.jobs.stream.batch import BatchReport


class StreamMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("ffs_stream_events_total", "input events by kind and outcome",
                              ["kind", "outcome"], registry=r)
        self.dead = Counter("ffs_stream_dead_letters_total", "messages sent to dead letters",
                            ["reason"], registry=r)
        self.enriched = Counter("ffs_stream_enriched_total",
                                "enriched rows published (corrections included)",
                                ["kind"], registry=r)
        self.batches = Counter("ffs_stream_batches_total", "micro-batches processed",
                               registry=r)
        self.batch_seconds = Histogram(
            "ffs_stream_batch_seconds", "time to process one micro-batch on the driver",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.freshness = Histogram(
            "ffs_stream_freshness_seconds", "Kafka publish time to written in the online state",
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60), registry=r)
        self.lag = Gauge("ffs_stream_consumer_lag_messages", "messages published, not yet "
                         "processed", ["topic"], registry=r)
        self.watermark = Gauge("ffs_stream_watermark_seconds",
                               "newest event time processed (epoch s)", registry=r)
        self.waiting = Gauge("ffs_stream_labels_waiting",
                             "labels waiting for their transaction", registry=r)
        self.last_batch = Gauge("ffs_stream_last_batch_timestamp_seconds",
                                "wall time the last batch finished", registry=r)
        self.port: int | None = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int | None:
        if port < 0:
            return None
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = server.server_port
        return self.port

    def record(self, rep: BatchReport) -> None:
        self.batches.inc()
        self.batch_seconds.observe(rep.seconds)
        ev = self.events
        ev.labels("transaction", "written").inc(rep.written)
        ev.labels("transaction", "duplicate").inc(rep.duplicates)
        ev.labels("label", "applied").inc(rep.labels_written)
        ev.labels("label", "stale").inc(rep.stale_labels)
        for reason, n in rep.dead_letters.items():
            self.dead.labels(reason).inc(n)
        self.enriched.labels("transaction").inc(rep.enriched)
        self.enriched.labels("correction").inc(rep.corrections)
        self.enriched.labels("label").inc(rep.labels_written)
        for f in rep.freshness_s:
            self.freshness.observe(f)
        if rep.watermark is not None:
            self.watermark.set(rep.watermark)
        self.waiting.set(rep.labels_waiting)
        self.last_batch.set(time.time())
