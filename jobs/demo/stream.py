"""The live part of `ffs demo`: the stream running for real on embedded defaults.

Apache Kafka (KRaft, local) and a private Redis are started; `ffs stream` runs in this
process (Spark
local); the last days of the demo's traffic are replayed as fast as possible; then a stolen
card makes a burst of payments, one every half second, and the demo prints its velocity
features as each payment becomes visible online (publish -> visible), labels the burst as
fraud, and runs the consistency check. Returns what the analytics step needs (the broker and
the config) and a stop function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ffs.config import Config
from ffs.transformations import ids as _ids

BURST = 12  # payments of the stolen card
BURST_GAP_S = 25  # event-time seconds between them (a card-testing run)


@dataclass
class LiveStream:
    cfg: Config
    stop: Callable[[], None]


def run_live(cfg: Config, tx: pd.DataFrame, labels: pd.DataFrame, log: Callable[[str], None],
             days: int = 10) -> LiveStream:
    import shutil
    from pathlib import Path

    import redis

    from ffs.bus import kafka
    from ffs.bus.broker import LocalKafka
    from ffs.bus.producer import EventProducer
    from ffs.bus.replay import replay
    from ffs.jobs.stream.job import StreamJob
    from ffs.jobs.tools.consistency import check
    from ffs.online import layout
    from ffs.online.client import OnlineClient
    from ffs.online.redis_server import RedisServer

    # a fresh broker needs a fresh checkpoint: old offsets would skip the new topics' start
    checkpoint = Path(cfg.offline.path).parent / "stream-checkpoint"
    shutil.rmtree(checkpoint, ignore_errors=True)
    cfg.stream.checkpoint = str(checkpoint)
    broker = LocalKafka(log=lambda line: log(f"  {line}")).start()
    server = RedisServer().start()
    cfg.kafka.bootstrap_servers = broker.bootstrap_servers
    cfg.redis.url = server.url
    cfg.redis.timeout_ms = 2000
    cfg.stream.metrics_port = 0
    kafka.ensure_topics(cfg.kafka)
    log(f"  Redis {server.url}")

    lines: list[str] = []
    job = StreamJob(cfg, log=lines.append).start()
    stop_flag = threading.Event()
    runner = threading.Thread(target=job.run, kwargs={"stop": stop_flag}, daemon=True,
                              name="ffs-stream")
    runner.start()
    log(f"  ffs stream running (metrics http://127.0.0.1:{job.metrics.port}/metrics)")

    end = tx["event_timestamp"].max()
    start = end - pd.Timedelta(days=days)
    hist_tx = tx[tx["event_timestamp"] > start]
    hist_lab = labels[(labels["label_timestamp"] > start) & (labels["label_timestamp"] <= end)
                      & labels["transaction_id"].isin(hist_tx["transaction_id"])]
    t0 = time.monotonic()
    rep = replay(cfg.kafka, hist_tx, hist_lab)
    log(f"  replayed the last {days} days: {rep.transactions:,} payments and {rep.labels:,} "
        f"labels published in {rep.seconds:.1f} s")
    _wait_caught_up(job, 120)
    log(f"  ... all in Redis {time.monotonic() - t0:.1f} s after the first was published "
        f"({job.summary.batches} micro-batches; the first one starts Spark's Python workers)")

    conn = redis.Redis.from_url(server.url)
    client = OnlineClient(conn, prefix=cfg.redis.prefix, id_types=_ids.types(cfg))
    victim = str(hist_tx["customer_id"].value_counts().index[-1])  # a quiet card
    terminals = hist_tx["terminal_id"].astype(str).unique()[:3]
    base = int(end.timestamp()) + 60
    log(f"  fraud burst: card {victim} pays {BURST} times, {BURST_GAP_S} s apart, at "
        f"terminals {', '.join(terminals)}")
    log("    #   publish->visible   nb_tx_10m  sum_10m   nb_tx_1h  nb_terminals_1d  "
        "amount/avg30d")
    # new transaction ids of the declared type: past the replay's largest, or text
    ints = cfg.ids.transaction_id == "int"
    first_id = int(hist_tx["transaction_id"].max()) + 1_000_000 if ints else 0
    burst_ids = [first_id + k if ints else f"burst-{k}" for k in range(BURST)]
    with EventProducer(cfg.kafka, id_types=_ids.types(cfg)) as bus:
        for k in range(BURST):
            txid, t = burst_ids[k], base + k * BURST_GAP_S
            row = {"transaction_id": txid, "customer_id": victim,
                   "terminal_id": str(terminals[k % len(terminals)]),
                   "event_timestamp": pd.Timestamp(t, unit="s", tz="UTC").isoformat(),
                   "amount": round(180.0 + 37.5 * k, 2)}
            sent = time.monotonic()
            bus.send_transaction(row)
            bus.flush()
            while not conn.exists(layout.tx_key(cfg.redis.prefix, txid)):
                if time.monotonic() - sent > 30:
                    raise TimeoutError(f"{txid} not visible online after 30 s")
                time.sleep(0.01)
            seen = time.monotonic() - sent
            f = client.get_features([{k2: v for k2, v in row.items()}]).row(0)
            log(f"    {k + 1:<3} {seen * 1000:>8.0f} ms        {f['customer_nb_tx_10m']:>5}   "
                f"{f['customer_sum_amount_10m']:>8.2f}  {f['customer_nb_tx_1h']:>5}     "
                f"{f['customer_nb_terminals_1d']:>5}          "
                f"{_fmt(f['amount_over_customer_avg_30d'])}")
            time.sleep(0.5)
        for k in range(BURST):  # the bank confirms the fraud a few minutes later
            bus.send_label({"transaction_id": burst_ids[k], "is_fraud": 1,
                            "label_timestamp": pd.Timestamp(base + BURST * BURST_GAP_S + 300,
                                                            unit="s", tz="UTC").isoformat()})
    _wait_caught_up(job, 60)
    s = job.summary
    log(f"  labels for the burst applied; stream totals: {s.batches} micro-batches, "
        f"{s.events:,} events, {sum(s.dead_letters.values())} dead letters, {s.enriched:,} "
        f"enriched rows (+{s.corrections} corrections)")
    report = check(cfg, samples=1000, log=lambda _line: None)
    for line in report.lines():
        log(f"  consistency: {line}")

    def stop() -> None:  # clients first, then the services they talk to
        stop_flag.set()
        runner.join(60)
        job.stop()
        server.stop()
        broker.stop()

    return LiveStream(cfg, stop)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _wait_caught_up(job, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    time.sleep(1.0)
    while time.monotonic() < deadline:
        if sum(job.lag().values()) == 0 and time.monotonic() - job.last_data > 1.0:
            return
        time.sleep(0.25)
    raise TimeoutError(f"the stream did not catch up within {timeout_s:.0f} s")
