"""The event bus: Kafka-protocol topics for transactions, labels, enriched transactions and
dead letters (see messages.py for every message's schema), the embedded broker used locally,
a producer API for scoring services, offset-range reads, and `ffs replay`."""
