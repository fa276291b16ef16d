"""The producer API for scoring services: publish a transaction when it is scored and a
fraud label when it becomes known. Messages are checked with the same rules as the stream,
so a bad event fails at the caller (InputError) instead of landing in dead letters later.
A transaction carries transaction_id, event_timestamp and the loaded repo's key and value
columns (bus/messages.py); with the shipped repo:

    with EventProducer(cfg.kafka, id_types=ids.types(cfg)) as bus:
        bus.send_transaction({"transaction_id": 991, "customer_id": 42, "terminal_id": 7,
                              "event_timestamp": "2026-11-22T10:00:00Z", "amount": 12.5})
        bus.send_label({"transaction_id": 991, "is_fraud": 1,
                        "label_timestamp": "2026-11-29T08:00:00Z"})
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Mapping

from ffs.bus import kafka, messages
from ffs.config import KafkaConfig, StreamConfig
from ffs.errors import InputError, TransientError
from ffs.transformations.features import VALUE_COLUMNS
from ffs.transformations.ids import IdTypes

DEFAULT_IDS = IdTypes()


class EventProducer:
    """Publishes with our own partitioner (CRC-32 of the key, like librdkafka's "consistent"
    one), so every producer of this project, whatever its client library, sends one key to
    one partition: the stream relies on one entity's events staying in order (transactions
    are keyed by the first entity's key, messages.PARTITION_KEYS), and Pinot's
    upsert on the enriched topic on one transaction's rows meeting on one partition."""

    def __init__(self, cfg: KafkaConfig, validate: bool = True,
                 max_future_s: int = StreamConfig.max_future_s,
                 id_types: IdTypes = DEFAULT_IDS, **settings):
        """max_future_s: the stream's rule (stream.max_future_s) applied at the caller, so an
        event the stream would dead-letter as future_timestamp is refused here instead."""
        self.cfg, self.validate, self.max_future_s = cfg, validate, max_future_s
        self.id_types = id_types  # the config's `ids`: the stream reads ids by the same types
        self._producer = kafka.producer(cfg, **settings)
        # librdkafka refuses larger messages only at delivery, reported on a later call
        self.max_bytes = int(settings.get("message.max.bytes", 1_000_000))
        self.failures: list[str] = []
        self.sent = 0
        self._partitions: dict[str, int] = {}
        self._rr = 0

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")

    def _partition(self, topic: str, key: bytes | None) -> int:
        n = self._partitions.get(topic)
        if n is None:
            n = self._partitions[topic] = len(kafka.partitions(self.cfg, topic))
        if key is None:
            self._rr += 1
            return self._rr % n
        return zlib.crc32(key) % n

    def _produce(self, topic: str, partition: int, key: bytes | None, value: bytes,
                 timestamp_ms: int = 0) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=partition,
                                       timestamp=timestamp_ms, on_delivery=self._on_delivery)
                return
            except BufferError:  # local queue full: let librdkafka drain, then retry
                self._producer.poll(0.05)

    def send_raw(self, topic: str, key: bytes | str | None, value: bytes,
                 timestamp_ms: int | None = None) -> None:
        """Publish bytes as they are (replays, tests of malformed input). timestamp_ms sets
        the message's CreateTime (default: now)."""
        if isinstance(key, str):
            key = key.encode()
        size = len(value) + len(key or b"")
        if size > self.max_bytes:
            raise InputError(f"message for {topic} (key {(key or b'')[:40]!r}) is {size:,} "
                             f"bytes, over the producer's limit of {self.max_bytes:,}")
        self._produce(topic, self._partition(topic, key), key, value, timestamp_ms or 0)
        self.sent += 1
        if self.sent % 10000 == 0:
            self._producer.poll(0)

    def _encode(self, event: Mapping[str, object], what: str) -> bytes:
        try:  # JSON has no NaN or infinity: say which field, not "not JSON" later
            return json.dumps(dict(event), separators=(",", ":"), default=str,
                              allow_nan=False).encode()
        except ValueError:
            bad = sorted(k for k, v in event.items()
                         if isinstance(v, float) and not math.isfinite(v))
            numbers = [c for c, kind in VALUE_COLUMNS.items() if kind == messages.NUMBER]
            reason = messages.BAD_AMOUNT if set(bad) & set(numbers) else messages.BAD_TYPE
            raise InputError(f"{what} refused ({reason}): {bad} must be finite numbers, "
                             f"found {[event[k] for k in bad]}") from None

    def send_transaction(self, tx: Mapping[str, object]) -> None:
        value = self._encode(tx, "transaction")
        if self.validate:
            try:
                parsed = messages.parse_transaction(value, self.id_types)
            except messages.Refused as exc:
                raise InputError(f"transaction refused ({exc.reason}): {exc.detail}") from None
            self._refuse_future(parsed.t, "transaction")
            key = parsed.key()
        else:
            key = messages.message_key(tx)
        self.send_raw(self.cfg.transactions_topic, key.encode(), value)

    def _refuse_future(self, t: int, what: str) -> None:
        limit = time.time() + self.max_future_s
        if t > limit:
            raise InputError(f"{what} refused ({messages.FUTURE}): {messages.iso(t)} is more "
                             f"than {self.max_future_s} s after now (stream.max_future_s)")

    def send_label(self, label: Mapping[str, object]) -> None:
        value = self._encode(label, "label")
        if self.validate:
            try:
                parsed = messages.parse_label(value, self.id_types)
            except messages.Refused as exc:
                raise InputError(f"label refused ({exc.reason}): {exc.detail}") from None
            self._refuse_future(parsed.label_t, "label")
            key = parsed.transaction_id
        else:
            key = str(label.get("transaction_id", ""))
        self.send_raw(self.cfg.labels_topic, key.encode(), value)

    def flush(self, timeout_s: float = 60.0) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            raise TransientError(f"{left} messages not delivered within {timeout_s:.0f} s")
        if self.failures:
            first, n = self.failures[0], len(self.failures)
            self.failures = []
            raise TransientError(f"{n} messages failed delivery; first: {first}")

    def close(self) -> None:
        """Flush, then release the client: a librdkafka client left to the garbage collector
        keeps reconnecting to a broker that is gone. Idempotent."""
        if self._producer is None:
            return
        try:
            self.flush()
        finally:
            self._producer.close()
            self._producer = None

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5)
            self._producer.close()
            self._producer = None
