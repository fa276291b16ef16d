"""A Spark streaming source over Kafka-protocol topics, for when Spark's own Kafka connector
(spark-sql-kafka) is not on the classpath, as on machines that cannot download it.

It reads assigned partitions by offset range; no consumer group. Offsets are a JSON dict
{"topic:partition": next offset} that Spark keeps in the query's checkpoint, so a restarted
query re-reads exactly the batch that had not been committed. Rows have the columns of
Spark's connector that the job needs: topic, partition, offset, key, value, timestamp_ms.

Secrets never travel in options (options can appear in plans and logs): the worker reads the
connection settings from the same config/environment as the driver (ffs.config.load_config);
options carry only topic names, limits and a non-secret bootstrap address.
"""

from __future__ import annotations

import json

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

SCHEMA = ("topic string, partition int, offset long, key binary, value binary, "
          "timestamp_ms long")
NAME = "ffs_kafka"


def _kafka_config(options: dict):
    from ffs.config import load_config

    cfg = load_config(options.get("config_path") or None).kafka
    if options.get("bootstrap_servers"):
        cfg.bootstrap_servers = options["bootstrap_servers"]
    return cfg


class _Ranges(InputPartition):
    """Offset ranges [start, end) of some topic-partitions, read by one task with one consumer:
    on a small machine one task per batch beats one per partition (each task pays scheduling
    and a consumer's first fetch)."""

    def __init__(self, ranges: list[tuple[str, int, int, int]]):
        super().__init__(ranges)
        self.ranges = ranges


_CONSUMERS: dict[str, object] = {}  # per Python worker process, reused across batches


def _consumer(cfg):
    from bus import kafka

    key = cfg.bootstrap_servers
    if key not in _CONSUMERS:
        _CONSUMERS[key] = kafka.consumer(cfg)
    return _CONSUMERS[key]


class KafkaPartitionsReader(DataSourceStreamReader):
    def __init__(self, options: dict):
        self.options = options
        self.topics = [t for t in options["topics"].split(",") if t]
        self.max_rows = int(options.get("max_events_per_batch", 0) or 0)
        self.starting = options.get("starting_offsets", "earliest")

    def _marks(self) -> dict[str, tuple[int, int]]:
        from bus import kafka

        if not hasattr(self, "_cfg"):
            self._cfg = _kafka_config(self.options)
        # Spark asks for the latest offsets every few ms while idle: reuse one connection
        return kafka.watermarks(self._cfg, self.topics, _consumer(self._cfg))

    def initialOffset(self) -> dict:
        marks = self._marks()
        pick = 1 if self.starting == "latest" else 0
        return {tp: lo_hi[pick] for tp, lo_hi in marks.items()}

    def getDefaultReadLimit(self):
        return ReadMaxRows(self.max_rows) if self.max_rows > 0 else ReadAllAvailable()

    def latestOffset(self, start: dict, limit) -> dict:
        marks = self._marks()
        ahead = {tp: (int(start[tp]), hi) for tp, (_lo, hi) in marks.items()
                 if tp in start and int(start[tp]) > hi}
        if ahead:  # offsets the topic never reached: it was recreated, or another cluster
            raise RuntimeError(
                f"the checkpoint's offsets are beyond the end of the topics {ahead} "
                f"(checkpoint, high watermark): the topics were recreated or this checkpoint "
                f"belongs to another Kafka; start with a new stream.checkpoint")
        # a partition added since the last batch starts at its earliest offset
        begin = {tp: int(start.get(tp, lo)) for tp, (lo, _hi) in marks.items()}
        end = {tp: max(begin[tp], hi) for tp, (_lo, hi) in marks.items()}
        budget = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        available = sum(end[tp] - begin[tp] for tp in end)
        if budget is not None and available > budget:
            # share the budget in proportion to each partition's backlog (at least 1 each)
            end = {tp: begin[tp] + max(1 if end[tp] > begin[tp] else 0,
                                       (end[tp] - begin[tp]) * budget // available)
                   for tp in end}
        # partitions that vanished keep their last offset so the checkpoint stays comparable
        for tp, off in start.items():
            end.setdefault(tp, int(off))
        return end

    def partitions(self, start: dict, end: dict):
        ranges = []
        for tp, stop in sorted(end.items()):
            begin = int(start.get(tp, stop))
            if stop > begin:
                topic, p = tp.rsplit(":", 1)
                ranges.append((topic, int(p), begin, int(stop)))
        tasks = max(1, int(self.options.get("read_tasks", 1)))
        return [_Ranges(ranges[i::tasks]) for i in range(min(tasks, len(ranges)))]

    def read(self, partition: _Ranges):
        import pyarrow as pa

        from bus import kafka

        cfg = _kafka_config(self.options)
        cols: dict[str, list] = {k: [] for k in ("topic", "partition", "offset", "key", "value",
                                                  "timestamp_ms")}
        schema = pa.schema([("topic", pa.string()), ("partition", pa.int32()),
                            ("offset", pa.int64()), ("key", pa.binary()),
                            ("value", pa.binary()), ("timestamp_ms", pa.int64())])

        def batch():
            b = pa.RecordBatch.from_pydict(cols, schema=schema)
            for v in cols.values():
                v.clear()
            return b

        cons = _consumer(cfg)
        for topic, p, begin, end in partition.ranges:
            for r in kafka.read_range(cfg, topic, p, begin, end, cons):
                cols["topic"].append(r.topic)
                cols["partition"].append(r.partition)
                cols["offset"].append(r.offset)
                cols["key"].append(r.key)
                cols["value"].append(r.value)
                cols["timestamp_ms"].append(r.timestamp_ms)
                if len(cols["offset"]) >= 20000:
                    yield batch()
        if cols["offset"]:
            yield batch()

    def commit(self, end: dict) -> None:
        # nothing to release: offsets live in Spark's checkpoint, data stays in Kafka
        pass


class KafkaPartitionsSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema) -> KafkaPartitionsReader:
        return KafkaPartitionsReader(self.options)


def describe(options: dict) -> str:
    """For logs: the options without anything secret (there is nothing secret in them)."""
    return json.dumps({k: v for k, v in options.items() if "password" not in k})
