"""One micro-batch of the stream, on the driver: parse, check time, write the online state,
enrich, publish. Spark hands it the batch's raw Kafka rows (jobs/stream/job.py); nothing here
needs Spark, so the same code runs in tests and benchmarks without a JVM.

Exactly-once effects come from two facts: Spark re-runs an uncommitted batch with the same id
and the same offsets, and every write here is idempotent (a transaction id is applied once,
a label only if it is at least as new as the one stored). Outputs (enriched rows, dead
letters) are flushed before the batch returns, so they are at least once, keyed so that
consumers upsert them (enriched: transaction_id; dead letters: source topic/partition/offset).

Event time: which events count is decided by the events alone (jobs/stream/rules.py), so one
batch or many, with restarts, keep the same ones: messages are taken in log order and each is
judged against the newest event time accepted before it on its own partition (too late past
the allowed lateness, beyond the retention); the first copy of a transaction_id in the log
wins; a label stamped before its payment is refused. Each partition's progress is stored in
Redis with the batch id, so a re-run batch judges exactly as its first run did. Accepted
events within the lateness are inserted at their place in time (online/writer.py). The
watermark, the least progress of all partitions as in Flink, only bounds what the state keeps
and how long a label waits for its transaction: a partition that stops receiving data holds
it back, which costs memory but never correctness.

Enriched rows are read after the whole batch is written. A read at t counts only events at or
before t and labels known by t (online/layout.py, fraud spells), so every transaction of the
batch gets exactly its training-set features, whatever the order inside the batch or across
batches (a transaction arriving late, on a partition behind the others, never sees a label
from its future). An event that arrives after a later event of one of its entities
was already enriched (late, or a label whose transaction's entity moved on) makes the writer
flag it; the affected transactions are read again and re-published, so the last
row per key is exact.

Labels whose transaction is not known yet (the two topics are not ordered with each other)
wait in Redis and are applied when the transaction arrives; past the allowed lateness they
go to dead letters as unknown_transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ffs.bus import messages as M
from ffs.config import Config
from ffs.jobs.stream import rules
from ffs.online import layout, state_format
from ffs.online.client import OnlineClient
from ffs.online.writer import OnlineWriter
from ffs.transformations import ids as _ids
from ffs.transformations.features import ENTITIES

log = logging.getLogger("ffs.stream")

READ_CHUNK = 1000  # rows per online read (one Lua call each)
MAX_PENDING_LABELS = 100_000  # waiting labels beyond this are dead-lettered at once


@dataclass
class BatchReport:
    batch_id: int
    messages: int = 0  # every message of the batch, dead letters included
    transactions: int = 0  # valid transaction messages
    labels: int = 0
    written: int = 0
    duplicates: int = 0
    labels_written: int = 0
    stale_labels: int = 0
    labels_waiting: int = 0
    enriched: int = 0
    corrections: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    watermark: int | None = None
    seconds: float = 0.0
    freshness_s: list[float] = field(default_factory=list)  # publish -> written, per event
    ran: str = ""  # where it ran, when that varies ("as tasks", "on the driver")

    @property
    def n_dead(self) -> int:
        return sum(self.dead_letters.values())

    def line(self) -> str:
        dead = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters.items())) or "none"
        wm = M.iso(self.watermark) if self.watermark is not None else "-"
        return (f"batch {self.batch_id}: {self.transactions} tx ({self.written} new, "
                f"{self.duplicates} dup), {self.labels} labels ({self.labels_written} applied, "
                f"{self.labels_waiting} waiting), {self.enriched} enriched + "
                f"{self.corrections} corrections, dead letters: {dead}; watermark {wm}; "
                + (f"{self.ran}; " if self.ran else "") + f"{self.seconds * 1000:.0f} ms")


class BatchProcessor:
    """publish(topic, key, value) sends a message; publish_at(topic, key, value, ts_ms), when
    given, is used for enriched rows so that they carry the Kafka timestamp of the event they
    come from: downstream stores then measure event -> queryable, not enriched -> queryable."""

    def __init__(self, cfg: Config, redis_conn, publish: Callable[[str, bytes | None, bytes],
                                                                   None],
                 flush: Callable[[], None],
                 publish_at: Callable[[str, bytes | None, bytes, int | None], None] | None = None):
        self.cfg, self.redis = cfg, redis_conn
        self.publish, self.flush = publish, flush
        self.publish_at = publish_at or (lambda topic, key, value, _ts: publish(topic, key, value))
        self._source_ts: dict[str, int] = {}
        p = cfg.redis.prefix
        self.prefix = p
        state_format.check(redis_conn, p, writing=True)
        self.writer = OnlineWriter(redis_conn, p)
        self.client = OnlineClient(redis_conn, prefix=p, max_batch=READ_CHUNK,
                                   id_types=_ids.types(cfg))
        self.state_key, self.pending_key = f"{p}:stream:state", f"{p}:stream:pending_labels"
        self.tx_retention, self.label_retention = rules.retentions()
        self.k = cfg.kafka
        self.id_types = _ids.types(cfg)

    # ---- entry point ---------------------------------------------------------------------

    def process(self, batch_id: int, rows: dict[str, list]) -> BatchReport:
        """rows: columns topic, partition, offset, key, value, timestamp_ms (lists)."""
        started = time.perf_counter()
        now_ms = time.time_ns() // 1_000_000
        rep = BatchReport(batch_id, messages=len(rows["offset"]))
        progress = self._progress_before(batch_id)
        wm_before = min(progress.values()) if progress else None
        txs, labels, after = self._parse(rows, now_ms, progress, rep)
        wm_after = min(after.values()) if after else None

        ok_txs = self._write_transactions(txs, now_ms, rep, wm_before)
        self._label_anchors: list[tuple[str, str, int]] = []
        applied = self._apply_labels(self._label_todo(labels), wm_after, now_ms, rep)
        # reads count a label only from its own label time (online/layout.py, fraud
        # spells), so every read of the batch is exact whatever was written before it
        batch = [tx for tx, _ in txs if tx in ok_txs]  # no conflicting copy
        self._source_ts = {tx.transaction_id: src[4] for tx, src in txs}
        self._enrich(batch, now_ms)
        rep.enriched = len(batch) if self.cfg.stream.enrich else 0
        seen = {tx.transaction_id for tx in batch}
        anchors = self._late_anchors(self._late)
        self._add_anchors(anchors, self._label_anchors)
        fixes = [tx for tx in self._affected(anchors) if tx.transaction_id not in seen] \
            if self.cfg.stream.enrich else []
        self._enrich(fixes, now_ms)
        rep.corrections = len(fixes)
        self._publish_labels(applied, labels, now_ms)
        rep.labels_written = len(applied)
        rep.labels_waiting = self.redis.zcard(self.pending_key)
        self.flush()
        self._save_progress(batch_id, progress, after)
        rep.watermark = wm_after
        rep.seconds = time.perf_counter() - started
        return rep

    # ---- watermark -----------------------------------------------------------------------

    def _progress_before(self, batch_id: int) -> dict[str, int]:
        """{"topic:partition": newest accepted event time} as of the start of this batch."""
        state = self.redis.hgetall(self.state_key)
        if not state:
            return {}
        stored = {k.decode(): v.decode() for k, v in state.items()}
        # a re-run batch sees what its first run saw
        field_ = "before" if int(stored.get("batch_id", -1)) == batch_id else "after"
        return json.loads(stored.get(field_, "{}"))

    def _save_progress(self, batch_id: int, before: dict, after: dict) -> None:
        self.redis.hset(self.state_key, mapping={
            "batch_id": batch_id, "before": json.dumps(before), "after": json.dumps(after),
            "updated_ms": time.time_ns() // 1_000_000})

    # ---- parsing and time checks -----------------------------------------------------------

    def _dead(self, rep: BatchReport, reason: str, detail: str, topic: str, partition: int,
              offset: int, key, value, ts_ms, now_ms: int) -> None:
        k, v = M.dead_letter(reason, detail, topic, partition, offset, key, value, ts_ms, now_ms)
        self.publish(self.k.dead_letter_topic, k, v)
        rep.dead_letters[reason] = rep.dead_letters.get(reason, 0) + 1

    def _time_check(self, t: int, now_s: int, newest: int | None,
                    retention: int) -> tuple[str, str] | None:
        if t > now_s + self.cfg.stream.max_future_s:
            return M.FUTURE, f"{M.iso(t)} is more than {self.cfg.stream.max_future_s} s " \
                             f"after the wall clock ({M.iso(now_s)})"
        return rules.judge_time(t, newest, self.cfg.stream.allowed_lateness_s, retention)

    def _parse(self, rows: dict[str, list], now_ms: int, progress: dict[str, int],
               rep: BatchReport, dead_letters: bool = True):
        """Messages in log order, each judged against its partition's newest accepted event
        before it (jobs/stream/rules.py). Returns (transactions, labels, progress after).
        dead_letters=False judges again without publishing (a second pass over a batch)."""
        now_s = now_ms // 1000
        txs: list[tuple[M.Transaction, tuple]] = []
        labels: list[tuple[M.Label, tuple]] = []
        ret_c, ret_t = self.tx_retention, self.label_retention
        newest = dict(progress)
        topics, parts, offs = rows["topic"], rows["partition"], rows["offset"]
        keys, values, stamps = rows["key"], rows["value"], rows["timestamp_ms"]
        tx_topic = self.k.transactions_topic
        at = [i for i, topic in enumerate(topics) if topic == tx_topic]
        parsed = dict(zip(at, M.parse_transactions([values[i] for i in at], self.id_types),
                          strict=True))
        for i in rules.log_order(topics, parts, offs):
            topic, part, off, key, value, ts = topics[i], parts[i], offs[i], keys[i], \
                values[i], stamps[i]
            tp = f"{topic}:{part}"
            try:
                if topic == tx_topic:
                    tx = parsed[i]
                    if isinstance(tx, M.Refused):
                        raise tx
                    bad = self._time_check(tx.t, now_s, newest.get(tp), ret_c)
                    if bad is None:
                        txs.append((tx, (topic, part, off, key, ts)))
                        newest[tp] = max(tx.t, newest.get(tp, tx.t))
                        continue
                elif topic == self.k.labels_topic:
                    lab = M.parse_label(value, self.id_types)
                    bad = self._time_check(lab.label_t, now_s, newest.get(tp), ret_t)
                    if bad is None:
                        labels.append((lab, (topic, part, off, ts)))
                        newest[tp] = max(lab.label_t, newest.get(tp, lab.label_t))
                        continue
                else:
                    bad = (M.BAD_TYPE, f"message from unexpected topic {topic!r}")
            except M.Refused as exc:
                bad = (exc.reason, exc.detail)
            if dead_letters:
                self._dead(rep, bad[0], bad[1], topic, part, off, key, value, ts, now_ms)
        rep.transactions, rep.labels = len(txs), len(labels)
        return txs, labels, newest

    # ---- writes ----------------------------------------------------------------------------

    def _write_transactions(self, txs, now_ms: int, rep: BatchReport,
                            wm_before: int | None,
                            keep: tuple[bool, int | None] | None = None) -> set[M.Transaction]:
        """Writes in event-time order (fewest late inserts). Returns the transactions written
        or already present with the same content (both get enriched rows); not a conflicting
        copy, even when another copy of its id in the batch is fine. keep: (trim, reads_from)
        decided by the caller for the whole batch (a partitioned batch's task sees only its
        own events)."""
        self._write_order(txs)
        events = [tx.event() for tx, _ in txs]
        self._late: list[M.Transaction] = []
        if not events:
            return set()
        # this batch reads at its own events' times (a backlog batch can span days), and
        # nothing older than watermark - lateness is accepted: keep what such reads need
        if keep is not None:
            total, statuses, late = self.writer.write_transactions(
                events, reads_from=keep[1], trim=keep[0])
        elif wm_before is None:
            total, statuses, late = self.writer.write_transactions(events, trim=False)
        else:
            # a partition seen for the first time has nothing to be late against: its events
            # may be older than the watermark's lateness, and are read at their own times
            oldest = min(e["t"] for e in events)
            total, statuses, late = self.writer.write_transactions(
                events, reads_from=min(wm_before - self.cfg.stream.allowed_lateness_s, oldest))
        rep.written, rep.duplicates = total.written, total.duplicate
        ok: set[M.Transaction] = set()
        done_ms = time.time_ns() // 1_000_000
        for (tx, (topic, part, off, key, ts)), status, is_late in zip(txs, statuses, late,
                                                                     strict=False):
            if status == "conflict":
                self._dead(rep, M.CONFLICT, f"transaction_id {tx.transaction_id!r} was already "
                           f"stored with other keys, time or values; the first one stays",
                           topic, part, off, key,
                           M.transaction_message(tx), ts, now_ms)
                continue
            ok.add(tx)
            if is_late:
                self._late.append(tx)
            if status == "written" and ts and ts > 0:
                rep.freshness_s.append((done_ms - ts) / 1000)
        return ok

    @staticmethod
    def _write_order(txs) -> None:
        """Sorts the batch's transactions for writing: by event time (fewest late inserts),
        except that every copy of a transaction_id goes right after the copy that wins
        (rules.first_copy: the first in log order, whatever the batch boundaries), so
        the writer keeps that one and judges the others against it, or against a copy stored
        by an earlier batch, which is earlier in the log still."""
        by_id: dict[str, list[int]] = {}
        for i, (tx, _src) in enumerate(txs):
            by_id.setdefault(tx.transaction_id, []).append(i)
        rank = {}
        for idx in by_id.values():
            win = idx[rules.first_copy([(txs[i][1][1], txs[i][1][2], txs[i][1][4])
                                        for i in idx])] if len(idx) > 1 else idx[0]
            for i in idx:
                rank[i] = (txs[win][0].t, i != win, i)
        order = sorted(range(len(txs)), key=rank.__getitem__)
        txs[:] = [txs[i] for i in order]

    def _label_todo(self, labels, waiting: bool = True
                    ) -> list[tuple[M.Label, tuple, bytes | None]]:
        """This batch's labels and (waiting) the waiting ones, in label-time order."""
        parked = [(*self._unpark(m), m) for m in self.redis.zrange(self.pending_key, 0, -1)
                  ] if waiting else []
        todo = [(lab, src, None) for lab, src in labels] + parked
        todo.sort(key=lambda x: x[0].label_t)
        return todo

    def _apply_labels(self, todo, wm_after: int | None, now_ms: int,
                      rep: BatchReport) -> list[M.Label]:
        """Writes labels; parks those whose transaction is unknown, dead-letters those that
        waited past the allowed lateness. Returns the labels applied."""
        if not todo:
            return []
        _total, statuses, anchors = self.writer.write_labels(
            [{"transaction_id": lab.transaction_id, "is_fraud": lab.is_fraud,
              "label_t": lab.label_t} for lab, _, _ in todo])
        applied: list[M.Label] = []
        park, unpark = {}, []
        limit = None if wm_after is None else wm_after - self.cfg.stream.allowed_lateness_s
        for (lab, src, member), status, anchor in zip(todo, statuses, anchors, strict=False):
            if status == "unknown_transaction":
                if limit is not None and lab.label_t < limit:
                    topic, part, off, ts = src
                    self._dead(rep, M.UNKNOWN_TRANSACTION,
                               f"no transaction {lab.transaction_id!r} arrived within the "
                               f"allowed lateness ({self.cfg.stream.allowed_lateness_s} s)",
                               topic, part, off, lab.transaction_id.encode(),
                               M.label_message(lab), ts, now_ms)
                    if member is not None:
                        unpark.append(member)
                elif member is None:
                    park[self._park(lab, src)] = lab.label_t
                continue
            if member is not None:
                unpark.append(member)
            if status == "before_transaction":
                topic, part, off, ts = src
                self._dead(rep, M.LABEL_BEFORE_TRANSACTION,
                           f"label_timestamp {M.iso(lab.label_t)} is before its transaction "
                           f"{lab.transaction_id!r}", topic, part, off,
                           lab.transaction_id.encode(), M.label_message(lab), ts, now_ms)
                continue
            if status == "written":
                applied.append(lab)
                self._label_anchors += anchor
            elif status == "stale":
                rep.stale_labels += 1
        if park:
            if self.redis.zcard(self.pending_key) + len(park) > MAX_PENDING_LABELS:
                for member in park:
                    lab, (topic, part, off, ts) = self._unpark(member)
                    self._dead(rep, M.UNKNOWN_TRANSACTION, "transaction unknown and too many "
                               f"labels already waiting ({MAX_PENDING_LABELS})", topic, part,
                               off, lab.transaction_id.encode(), M.label_message(lab), ts,
                               now_ms)
            else:
                self.redis.zadd(self.pending_key, park)
        if unpark:
            self.redis.zrem(self.pending_key, *unpark)
        return applied

    def _publish_labels(self, applied: list[M.Label], labels, now_ms: int) -> None:
        """The applied labels' enriched rows, each with its own message's Kafka time (labels:
        this batch's (label, source) pairs; a label that waited has none)."""
        label_ts = {lab.transaction_id: src[3] for lab, src in labels}
        for lab in applied:
            self.publish_at(self.k.enriched_topic, lab.transaction_id.encode(),
                            M.enriched_label(lab, now_ms), label_ts.get(lab.transaction_id))

    @staticmethod
    def _park(lab: M.Label, src: tuple) -> str:
        return json.dumps([lab.transaction_id, lab.is_fraud, lab.label_t, *src],
                          separators=(",", ":"))

    @staticmethod
    def _unpark(member: bytes | str):
        txid, fraud, label_t, topic, part, off, ts = json.loads(member)
        return M.Label(txid, fraud, label_t), (topic, part, off, ts)

    # ---- enrichment --------------------------------------------------------------------------

    def _enrich(self, rows: list[M.Transaction], now_ms: int) -> None:
        """Reads each transaction's features as of its own time and publishes them."""
        if not self.cfg.stream.enrich:
            return
        topic = self.k.enriched_topic
        client = self.client
        chunks = [rows[i:i + READ_CHUNK] for i in range(0, len(rows), READ_CHUNK)]

        def send(k: int):
            return (client.send_many([([tx.row() for tx in chunks[k]], None)])
                    if k < len(chunks) else None)

        # a chunk's read goes out before the one before it is published: Redis runs it while
        # this process assembles and publishes (OnlineClient.send_many)
        pending = send(0)
        try:
            for k, chunk in enumerate(chunks):
                current, pending = pending, send(k + 1)
                res = client.receive_many(current)[0]
                if res.error or res.unavailable:  # never publish UNAVAILABLE: the batch re-runs
                    raise RuntimeError(f"online read failed while enriching: "
                                       f"{res.error or res.unavailable}")
                names, values = res.feature_names, res.values
                source_ts = self._source_ts
                for j, tx in enumerate(chunk):
                    feats = {name: values[name][j] for name in names}
                    self.publish_at(topic, tx.transaction_id.encode(),
                                    M.enriched_transaction(tx, feats, now_ms),
                                    source_ts.get(tx.transaction_id))
        finally:
            if pending is not None:  # a failure left the read ahead unread
                client.abandon_many(pending, "the enrichment stopped")

    @staticmethod
    def _late_anchors(late: list[M.Transaction]) -> dict[tuple[str, str], int]:
        """{(entity, value): since}: each late event's entities, from its time on."""
        anchors: dict[tuple[str, str], int] = {}
        BatchProcessor._add_anchors(anchors, [
            (e.name, layout.entity_value([tx.get(k) for k in e.keys]), tx.t)
            for tx in late for e in ENTITIES])
        return anchors

    @staticmethod
    def _add_anchors(anchors: dict[tuple[str, str], int], more) -> None:
        for name, value, since in more:
            anchors[(name, value)] = min(since, anchors.get((name, value), since))

    def _affected(self, anchors: dict[tuple[str, str], int],
                  until: int | None = None) -> list[M.Transaction]:
        """Stored transactions whose features a late event or label just changed: each
        entity's events from the late event's time (or the label's `since`) on, up to
        `until` when given."""
        return [M.Transaction.from_event(e) for e in self.writer.stored_events(anchors, until)]
