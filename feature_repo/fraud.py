"""The shipped fraud repo, in Feast's own API: what a fraud team would write.

Entities, the two event sources with their column schemas (transactions and fraud labels,
each a Kafka topic with the offline table behind it), stream feature views whose
aggregations are the windowed features, an on-demand view for the request-time features,
and the feature service. `ffs apply` compiles this for every engine (batch, Spark, Redis,
the stream) and registers it in Feast's registry. What Feast has no word for is said with
tags and function names, listed in the README ("Feature repos"):

- `ffs.delay` on a view: its windows end that long before t, (t - D - W, t - D];
- `ffs.labels` on a view: the source of the labels its `fraud_rate` aggregations count
  (a label counts from its own label_timestamp on);
- functions beyond Feast's built-ins: `fraud_rate` (share of the window's transactions
  labelled fraud), `seconds_since_previous` (the entity's previous event strictly before t,
  within the time window).
"""

from __future__ import annotations

from datetime import timedelta

from feast import (
    Aggregation,
    Entity,
    FeatureService,
    Field,
    FileSource,
    KafkaSource,
    RequestSource,
    StreamFeatureView,
    ValueType,
)
from feast.data_format import JsonFormat
from feast.on_demand_feature_view import on_demand_feature_view
from feast.stream_feature_view import stream_feature_view
from feast.types import Float64, Int64, UnixTimestamp

from feature_repo.paths import kafka_settings, offline_table

DAY = timedelta(days=1)

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  description="the card / card holder")
terminal = Entity(name="terminal", join_keys=["terminal_id"], value_type=ValueType.INT64,
                  description="the merchant terminal")

_kafka = kafka_settings()
transactions = KafkaSource(
    name="transactions",
    kafka_bootstrap_servers=_kafka["bootstrap_servers"],
    topic=_kafka["transactions_topic"],
    timestamp_field="event_timestamp",
    message_format=JsonFormat(schema_json="transaction_id bigint, customer_id bigint, "
                                          "terminal_id bigint, event_timestamp timestamp, "
                                          "amount double, terminal_x double, "
                                          "terminal_y double"),
    batch_source=FileSource(name="transactions_offline", path=offline_table("transactions"),
                            timestamp_field="event_timestamp"),
    # the terminal's coordinates, when the feed has them (the handbook's files do not)
    tags={"ffs.optional": "terminal_x,terminal_y"},
    description="payments, one message per transaction (key: customer_id)",
)
labels = KafkaSource(
    name="labels",
    kafka_bootstrap_servers=_kafka["bootstrap_servers"],
    topic=_kafka["labels_topic"],
    timestamp_field="label_timestamp",
    message_format=JsonFormat(schema_json="transaction_id bigint, is_fraud bigint, "
                                          "label_timestamp timestamp"),
    batch_source=FileSource(name="labels_offline", path=offline_table("labels"),
                            timestamp_field="label_timestamp"),
    description="fraud labels (chargebacks), known days after the payment",
)


_DESCRIPTIONS: dict[str, str] = {}


def _window(name: str, function: str, window: timedelta, column: str = "amount",
            description: str = ""):
    _DESCRIPTIONS[name] = description
    return Aggregation(column=column, function=function, time_window=window, name=name)


def _schema(aggregations: list[Aggregation]) -> list[Field]:
    """Each aggregation's output field, with its type and description."""
    ints = ("count", "count_distinct")
    return [Field(name=a.name, dtype=Int64 if a.function in ints else Float64,
                  description=_DESCRIPTIONS[a.name]) for a in aggregations]


_daily = []
for _d in (1, 7, 30):
    _daily += [_window(f"customer_nb_tx_{_d}d", "count", _d * DAY, "transaction_id",
                       f"customer's transactions in the last {_d} day(s)"),
               _window(f"customer_avg_amount_{_d}d", "mean", _d * DAY, "amount",
                       f"customer's mean amount over the last {_d} day(s)")]
customer_daily = StreamFeatureView(
    name="customer_daily", entities=[customer], source=transactions, aggregations=_daily,
    schema=_schema(_daily), timestamp_field="event_timestamp", ttl=30 * DAY, online=True,
    description="the card's spending profile over 1, 7 and 30 days")

_delayed = []
for _d in (1, 7, 30):
    _delayed += [_window(f"terminal_nb_tx_{_d}d_delay7d", "count", _d * DAY, "transaction_id",
                         f"terminal's transactions in the {_d} day(s) before the label delay"),
                 _window(f"terminal_risk_{_d}d_delay7d", "fraud_rate", _d * DAY, "is_fraud",
                         f"share of those {_d}-day delayed transactions known to be fraud")]
terminal_risk = StreamFeatureView(
    name="terminal_risk", entities=[terminal], source=transactions, aggregations=_delayed,
    schema=_schema(_delayed), timestamp_field="event_timestamp", ttl=37 * DAY, online=True,
    tags={"ffs.delay": "7d", "ffs.labels": "labels"},
    description="the terminal's transactions and share known to be fraud, in windows that "
                "end 7 days before t (labels arrive within a week)")

_velocity = [
    _window("customer_nb_tx_10m", "count", timedelta(minutes=10), "transaction_id",
            "card velocity: transactions in the last 10 minutes"),
    _window("customer_sum_amount_10m", "sum", timedelta(minutes=10), "amount",
            "amount spent in the last 10 minutes"),
    _window("customer_nb_tx_1h", "count", timedelta(hours=1), "transaction_id",
            "transactions in the last hour"),
    _window("customer_sum_amount_1h", "sum", timedelta(hours=1), "amount",
            "amount spent in the last hour"),
    _window("customer_nb_terminals_1d", "count_distinct", DAY, "terminal_id",
            "distinct terminals used in the last day"),
    _window("customer_secs_since_prev_tx", "seconds_since_previous", 30 * DAY,
            "event_timestamp", "seconds since the customer's previous transaction (<= 30 days)"),
]
customer_velocity = StreamFeatureView(
    name="customer_velocity", entities=[customer], source=transactions, aggregations=_velocity,
    schema=_schema(_velocity), timestamp_field="event_timestamp", ttl=30 * DAY, online=True,
    description="card velocity: how fast and where the card is being used")

_terminal_velocity = [_window("terminal_nb_tx_1h", "count", timedelta(hours=1),
                              "transaction_id",
                              "terminal velocity: transactions in the last hour")]
terminal_velocity = StreamFeatureView(
    name="terminal_velocity", entities=[terminal], source=transactions,
    aggregations=_terminal_velocity, schema=_schema(_terminal_velocity),
    timestamp_field="event_timestamp", ttl=DAY, online=True,
    description="terminal velocity: transactions in the last hour")

_pair = [
    _window("customer_terminal_nb_tx_30d", "count", 30 * DAY, "transaction_id",
            "the card's transactions at this terminal in the last 30 days"),
    _window("customer_terminal_first_seen_30d", "first_seen", 30 * DAY, "event_timestamp",
            "seconds since the card's first transaction at this terminal (<= 30 days)"),
]
customer_terminal = StreamFeatureView(
    name="customer_terminal", entities=[customer, terminal], source=transactions,
    aggregations=_pair, schema=_schema(_pair), timestamp_field="event_timestamp",
    ttl=30 * DAY, online=True,
    description="this card at this terminal: how often, and since when (a terminal new to "
                "the card)")

_habits = [
    _window("customer_std_amount_30d", "std", 30 * DAY, "amount",
            "standard deviation of the card's amounts over 30 days"),
    _window("customer_max_amount_1d", "max", DAY, "amount",
            "the card's largest amount in the last day"),
    _window("customer_night_share_30d", "mean", 30 * DAY, "is_night",
            "share of the card's transactions at night (UTC hour <= 6) over 30 days"),
    _window("customer_first_seen_30d", "first_seen", 30 * DAY, "event_timestamp",
            "seconds since the card's first transaction (<= 30 days)"),
    _window("customer_prev_terminal_x", "last", 30 * DAY, "terminal_x",
            "x of the terminal of the card's previous transaction (null without coordinates)"),
    _window("customer_prev_terminal_y", "last", 30 * DAY, "terminal_y",
            "y of the terminal of the card's previous transaction (null without coordinates)"),
]


@stream_feature_view(
    entities=[customer], source=transactions, aggregations=_habits, schema=_schema(_habits),
    mode="python", timestamp_field="event_timestamp", ttl=30 * DAY, online=True,
    description="the card's habits: amounts, hours, where it was last used")
def customer_habits(events: dict) -> dict:
    # the event column the night share averages, derived on every path from the event's time
    return {"is_night": [int(t.hour <= 6) for t in events["event_timestamp"]]}


transaction = RequestSource(name="transaction", schema=[
    Field(name="amount", dtype=Float64), Field(name="event_timestamp", dtype=UnixTimestamp)])


@on_demand_feature_view(
    sources=[transaction, customer_daily[["customer_avg_amount_30d"]]],
    # (no per-field descriptions: Feast compares these fields with the ones it infers from
    # the function's output, descriptions included, and refuses the view when they differ)
    schema=[Field(name="amount", dtype=Float64), Field(name="tx_during_weekend", dtype=Int64),
            Field(name="tx_during_night", dtype=Int64),
            Field(name="amount_over_customer_avg_30d", dtype=Float64)],
    mode="python",
    description="the scored transaction: its amount, weekend and night flags (UTC, night = "
                "hour <= 6), and the amount over the card's 30-day mean (null when that mean "
                "is null or 0)")
def transaction_features(inputs: dict) -> dict:
    amounts, averages = inputs["amount"], inputs["customer_avg_amount_30d"]
    seconds = [int(t.timestamp()) if hasattr(t, "timestamp") else int(t)
               for t in inputs["event_timestamp"]]
    return {
        "amount": amounts,
        "tx_during_weekend": [int((s // 86400 + 3) % 7 >= 5) for s in seconds],
        "tx_during_night": [int((s % 86400) // 3600 <= 6) for s in seconds],
        "amount_over_customer_avg_30d": [
            a / m if a is not None and m is not None and m == m and m != 0 else None
            for a, m in zip(amounts, averages, strict=True)],
    }


location = RequestSource(name="location", schema=[
    Field(name="terminal_x", dtype=Float64), Field(name="terminal_y", dtype=Float64)])


@on_demand_feature_view(
    sources=[transaction, location,
             customer_daily[["customer_avg_amount_30d"]],
             customer_habits[["customer_std_amount_30d", "customer_prev_terminal_x",
                              "customer_prev_terminal_y"]],
             customer_velocity[["customer_secs_since_prev_tx"]],
             customer_terminal[["customer_terminal_first_seen_30d"]]],
    schema=[Field(name="amount_zscore_30d", dtype=Float64),
            Field(name="first_time_at_terminal", dtype=Int64),
            Field(name="distance_from_prev_terminal", dtype=Float64),
            Field(name="speed_from_prev_terminal", dtype=Float64)],
    mode="python",
    description="the scored payment against the card's habits: the amount's z-score over 30 "
                "days (null under 2 payments or no spread), a terminal the card has not used "
                "in 30 days (1/0), and the distance and implied speed (grid units per hour) "
                "from the previous payment's terminal (null without coordinates)")
def behaviour_features(inputs: dict) -> dict:
    import math

    def ok(v):
        return v is not None and v == v

    out: dict[str, list] = {"amount_zscore_30d": [], "first_time_at_terminal": [],
           "distance_from_prev_terminal": [], "speed_from_prev_terminal": []}
    for a, mean, std, seen, x, y, px, py, gap in zip(
            inputs["amount"], inputs["customer_avg_amount_30d"],
            inputs["customer_std_amount_30d"], inputs["customer_terminal_first_seen_30d"],
            inputs["terminal_x"], inputs["terminal_y"], inputs["customer_prev_terminal_x"],
            inputs["customer_prev_terminal_y"], inputs["customer_secs_since_prev_tx"],
            strict=True):
        out["amount_zscore_30d"].append(
            (a - mean) / std if ok(a) and ok(mean) and ok(std) and std > 0 else None)
        # the payment itself is the pair's first one (0 s), or not stored yet (null)
        out["first_time_at_terminal"].append(int(not ok(seen) or seen == 0))
        far = math.hypot(x - px, y - py) if all(ok(v) for v in (x, y, px, py)) else None
        out["distance_from_prev_terminal"].append(far)
        out["speed_from_prev_terminal"].append(
            far * 3600.0 / gap if far is not None and ok(gap) and gap > 0 else None)
    return out


fraud_detection_v1 = FeatureService(
    name="fraud_detection_v1",
    features=[transaction_features, customer_daily, terminal_risk, customer_velocity,
              terminal_velocity],
    description="the handbook's features plus card and terminal velocity")

fraud_detection_v2 = FeatureService(
    name="fraud_detection_v2",
    features=[transaction_features, behaviour_features, customer_daily, terminal_risk,
              customer_velocity, terminal_velocity, customer_terminal, customer_habits],
    description="fraud_detection_v1 plus behavioural features: the card at a new terminal, "
                "its amount against its habit, its night share, and how far and fast it moved")
