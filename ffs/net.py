"""Local network helpers shared by every service the project starts itself (Redis, Kafka,
Pinot, the dashboard): they bind loopback only."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
