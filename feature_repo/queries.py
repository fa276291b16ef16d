"""The shipped repo's analyst queries (the dashboard's, Pinot's and DuckDB's), written with
the query kit (analytics/query_kit.py): they name this repo's features, so they live with it.
A repo without a queries.py has no analyst queries; one with it lists them in `QUERIES`."""

from __future__ import annotations

from ffs.analytics.query_kit import DAY_MS, FRAUD, HOUR_MS, TABLE, TX, Dialect, Query, since

# Features compared day over day: never null (see the kit's rules) and covering the customer
# side (volume, spend) and the terminal side (delayed fraud rate).
DRIFT_FEATURES = ("amount", "customer_nb_tx_1d", "customer_sum_amount_1h",
                  "terminal_risk_7d_delay7d")


def _fraud_by_terminal_hour(d: Dialect, p: dict) -> str:
    hour = d.bucket("event_time_ms", "HOUR")
    return f"""SELECT terminal_id, {hour} AS hour_start_ms, COUNT(*) AS n_tx,
  SUM({FRAUD}) AS n_fraud, SUM({FRAUD}) * 1.0 / COUNT(*) AS fraud_rate
FROM {TABLE}
WHERE {since(p, p['hours'] * HOUR_MS)}
GROUP BY terminal_id, {hour}
HAVING SUM({FRAUD}) >= {p['min_fraud']}
ORDER BY SUM({FRAUD}) DESC, COUNT(*) DESC, terminal_id, {hour} DESC
LIMIT {p['limit']}"""


def _fraud_rate_by_hour(d: Dialect, p: dict) -> str:
    hour = d.bucket("event_time_ms", "HOUR")
    return f"""SELECT {hour} AS hour_start_ms, COUNT(*) AS n_tx, SUM({FRAUD}) AS n_fraud,
  SUM({FRAUD}) * 1.0 / COUNT(*) AS fraud_rate
FROM {TABLE}
WHERE {since(p, p['hours'] * HOUR_MS)}
GROUP BY {hour}
ORDER BY {hour}
LIMIT {p['limit']}"""


def _riskiest_terminals(d: Dialect, p: dict) -> str:
    risk = d.last("terminal_risk_7d_delay7d", "event_time_ms")
    return f"""SELECT terminal_id, {risk} AS risk_7d_delay7d,
  COUNT(*) AS n_tx, SUM({FRAUD}) AS n_fraud_labelled,
  MAX(terminal_nb_tx_1h) AS max_nb_tx_1h
FROM {TABLE}
WHERE {since(p, p['hours'] * HOUR_MS)}
GROUP BY terminal_id
ORDER BY {risk} DESC, SUM({FRAUD}) DESC, COUNT(*) DESC, terminal_id
LIMIT {p['limit']}"""


def _unusual_velocity(d: Dialect, p: dict) -> str:
    # customer_nb_tx_30d counts the transaction itself, so it is >= 1 on every row; the
    # 30-day daily average is nb_tx_30d / 30, and the spend average is mean * count / 30.
    tx_ratio = "customer_nb_tx_1h * 30.0 / customer_nb_tx_30d"
    amount_ratio = ("CASE WHEN customer_avg_amount_30d > 0 THEN customer_sum_amount_1h * 30.0"
                    " / (customer_avg_amount_30d * customer_nb_tx_30d) ELSE 0 END")
    daily = d.last("customer_nb_tx_30d", "event_time_ms", "LONG")
    return f"""SELECT customer_id, MAX({tx_ratio}) AS tx_1h_over_daily_avg,
  MAX(customer_nb_tx_1h) AS max_nb_tx_1h, MAX(customer_sum_amount_1h) AS max_sum_amount_1h,
  {daily} / 30.0 AS daily_avg_tx_30d, MAX({amount_ratio}) AS amount_1h_over_daily_avg,
  COUNT(*) AS n_tx
FROM {TABLE}
WHERE {since(p, p['hours'] * HOUR_MS)} AND customer_nb_tx_30d > 0
  AND customer_nb_tx_1h >= {p['min_tx_1h']}
  AND customer_nb_tx_1h * 30.0 >= {p['min_ratio']} * customer_nb_tx_30d
GROUP BY customer_id
ORDER BY MAX({tx_ratio}) DESC, MAX(customer_sum_amount_1h) DESC, customer_id
LIMIT {p['limit']}"""


def _label_delay(d: Dialect, p: dict) -> str:
    bucket = d.idiv("label_time_ms - event_time_ms", p["bucket_ms"])
    return f"""SELECT {bucket} AS delay_bucket, COUNT(*) AS n_labels,
  SUM({FRAUD}) AS n_fraud, MIN(label_time_ms - event_time_ms) AS min_delay_ms,
  MAX(label_time_ms - event_time_ms) AS max_delay_ms
FROM {TABLE}
WHERE {TX} AND label_time_ms > {p['now_ms'] - p['days'] * DAY_MS}
  AND label_time_ms >= event_time_ms
GROUP BY {bucket}
ORDER BY {bucket}
LIMIT {p['limit']}"""


def _drift(d: Dialect, p: dict) -> str:
    # "today" is the 24 h ending at now, "yesterday" the 24 h before it: rolling days, so
    # the comparison is not distorted by a partial calendar day at the end of a replay.
    period = f"CASE WHEN event_time_ms > {p['now_ms'] - DAY_MS} THEN 'today' ELSE 'yesterday' END"
    stats = ",\n  ".join(
        f"AVG({f}) AS {f}__mean, {d.quantile(f, 0.5)} AS {f}__p50, "
        f"{d.quantile(f, 0.9)} AS {f}__p90" for f in DRIFT_FEATURES)
    return f"""SELECT {period} AS period, COUNT(*) AS n_tx,
  {stats}
FROM {TABLE}
WHERE {since(p, 2 * DAY_MS)}
GROUP BY {period}
ORDER BY {period} DESC
LIMIT 2"""


def _drift_columns() -> tuple[str, ...]:
    cols = ["period", "n_tx"]
    for f in DRIFT_FEATURES:
        cols += [f"{f}__mean", f"{f}__p50", f"{f}__p90"]
    return tuple(cols)


QUERIES = (
    Query("fraud_rate_by_hour", "Fraud rate by hour",
          "Transactions and labelled frauds per hour (UTC) over the last hours before now.",
          "line", ("hour_start_ms", "n_tx", "n_fraud", "fraud_rate"), _fraud_rate_by_hour,
          {"hours": 48, "limit": 1000}, x="hour_start_ms", y=("n_tx", "n_fraud")),
    Query("fraud_by_terminal_hour", "Fraud rate by terminal and hour",
          "Terminal-hours with labelled frauds over the last hours, most frauds first.",
          "table", ("terminal_id", "hour_start_ms", "n_tx", "n_fraud", "fraud_rate"),
          _fraud_by_terminal_hour, {"hours": 24, "min_fraud": 1, "limit": 50}),
    Query("riskiest_terminals", "Riskiest terminals right now",
          "Terminals seen in the last hours, by their latest 7-day delayed fraud rate "
          "(terminal_risk_7d_delay7d), then by frauds labelled in that span.",
          "bar", ("terminal_id", "risk_7d_delay7d", "n_tx", "n_fraud_labelled", "max_nb_tx_1h"),
          _riskiest_terminals, {"hours": 24, "limit": 20}, x="terminal_id",
          y=("risk_7d_delay7d",)),
    Query("unusual_velocity", "Customers with unusual velocity",
          "Customers whose transactions in one hour reach min_ratio times their own 30-day "
          "daily average (customer_nb_tx_1h vs customer_nb_tx_30d / 30), in the last hours.",
          "bar", ("customer_id", "tx_1h_over_daily_avg", "max_nb_tx_1h", "max_sum_amount_1h",
                  "daily_avg_tx_30d", "amount_1h_over_daily_avg", "n_tx"),
          _unusual_velocity, {"hours": 24, "min_tx_1h": 3, "min_ratio": 2.0, "limit": 20},
          x="customer_id", y=("tx_1h_over_daily_avg",)),
    Query("label_delay", "Label delay distribution",
          "Labels received in the last days, by delay from the transaction (buckets of "
          "bucket_ms, default one day).",
          "bar", ("delay_bucket", "n_labels", "n_fraud", "min_delay_ms", "max_delay_ms"),
          _label_delay, {"days": 30, "bucket_ms": DAY_MS, "limit": 100}, x="delay_bucket",
          y=("n_labels",)),
    Query("feature_drift", "Day-over-day feature drift",
          "Mean, median and p90 of key features over the 24 h ending at now vs the 24 h "
          "before.", "drift", _drift_columns(), _drift, {}),
)
