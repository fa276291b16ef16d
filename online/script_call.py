"""The read script called straight on a pooled connection: every online read's one call.

redis-py's `Script.__call__` goes through `Redis.execute_command` and its retry wrapper on
the way to the connection: 58 us of CPU per 1-row read against 32 us for the same EVALSHA
sent and read on a connection from the same pool (BENCHMARKS.md, 2026-12-03). The clients
here are built without retries (online/client.py `redis_client`), so those layers only pass
the call along; this sends it directly and keeps what matters of them: the pool's checks of
a connection it hands out, the connection's own disconnect on a socket error or timeout,
and loading the script again when the server does not have it (a restarted Redis).

Only for a plain `redis.Redis` on its own pool, without retries; anything else (a client
that asks redis-py to retry, a single-connection client, a subclass, a cluster's shards)
keeps redis-py's way.

`overlapped` is the writer's many calls of one script (a stream batch's payments, then its
labels): a pipeline in chunks, each chunk sent before the previous one's replies are read,
so Redis runs one chunk while Python builds the next and parses the last. A redis-py
pipeline takes turns instead: it builds every call, then waits for Redis to run them all.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["direct", "overlapped"]

# calls per chunk of `overlapped`: large enough that a chunk's round trip is a small part of
# its time, small enough that the first chunk starts Redis early (~1-2 ms of script time)
CHUNK = 128


def direct(conn, script):
    """A callable like `script` (keys=, args=) that sends EVALSHA on a pooled connection,
    or `script` itself where that does not apply."""
    if not _plain(conn):
        return script
    return _Direct(conn.connection_pool, script)


def overlapped(conn, script, calls: Iterable[tuple[list, list]], chunk: int = CHUNK) -> list:
    """The replies of `script` called with each (keys, args) of `calls`, in order, as a
    pipeline would give them: `calls` is consumed a chunk at a time, and a chunk is sent
    before the replies of the one before it are read. An error reply raises once every reply
    is read (the connection stays clean); a server that lost the script is given it, and the
    calls it refused are sent again in their order (nothing of them ran). A client that
    `direct` does not apply to gets a redis-py pipeline."""
    if not _plain(conn):
        pipe = conn.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute()
    sha = script.sha
    commands: list[tuple] = []
    replies: list = []
    pool = conn.connection_pool
    c = pool.get_connection()
    try:
        unread = 0  # commands sent whose replies are not read yet, oldest first
        batch: list[tuple] = []
        for keys, args in calls:
            batch.append(("EVALSHA", sha, len(keys), *keys, *args))
            if len(batch) == chunk:
                c.send_packed_command(c.pack_commands(batch), check_health=False)
                commands += batch
                _read(c, replies, unread)
                unread, batch = len(batch), []
        if batch:
            c.send_packed_command(c.pack_commands(batch), check_health=False)
            commands += batch
        _read(c, replies, unread)
        _read(c, replies, len(batch))
    except BaseException:
        c.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(c)
    refused = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if refused:
        conn.script_load(script.script)
        again = overlapped(conn, script, [(list(commands[i][3:3 + commands[i][2]]),
                                           list(commands[i][3 + commands[i][2]:]))
                                          for i in refused], chunk)
        for i, r in zip(refused, again, strict=True):
            replies[i] = r
    for r in replies:
        if isinstance(r, ResponseError):
            raise r
    return replies


def _read(c, replies: list, n: int) -> None:
    """n replies from connection c onto `replies`; an error reply is kept, not raised."""
    for _ in range(n):
        try:
            replies.append(c.read_response())
        except ResponseError as exc:  # the whole reply was read
            replies.append(exc)


def _plain(conn) -> bool:
    """A plain `redis.Redis` on its own pool without retries: what the calls here apply to."""
    return type(conn) is redis.Redis and conn.connection is None and not _retries(conn)


def _retries(conn) -> bool:
    """Whether the pool's connections retry a failed command (Connection.__init__'s rule; a
    Retry of unknown make counts as retrying)."""
    kwargs = conn.connection_pool.connection_kwargs
    retry = kwargs.get("retry")
    return bool((retry is not None and getattr(retry, "_retries", 1))
                or kwargs.get("retry_on_timeout") or kwargs.get("retry_on_error"))


class _Direct:
    """`send` and `receive` are the call's two halves, for a caller that does other work
    while Redis runs the script (the HTTP server's event loop, online/server.py): between
    them the connection is out of the pool, waiting for its reply."""

    __slots__ = ("pool", "script")

    def __init__(self, pool, script):
        self.pool, self.script = pool, script

    @property
    def sha(self) -> str:
        return self.script.sha

    def __call__(self, keys, args):
        return self.receive(self.send(keys, args), keys, args)

    def send(self, keys, args):
        """Sends the EVALSHA; returns the connection its reply will come on."""
        pool = self.pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", self.script.sha, len(keys), *keys, *args)
        except BaseException:
            pool.release(conn)  # (a socket error has disconnected it)
            raise
        return conn

    def receive(self, conn, keys, args):
        """The reply of `send`'s call (blocks until it is whole), the connection back in the
        pool; a server that lost the script gets it again and answers the call anew."""
        try:
            return conn.read_response()
        except NoScriptError:
            pass  # the whole error reply was read: the connection goes back clean
        finally:
            self.pool.release(conn)
        return self.script(keys=keys, args=args)  # loads it, then calls it

    def abandon(self, conn) -> None:
        """Gives up on `send`'s reply: the connection is closed (a late reply must not be
        read as the next call's) and goes back to the pool, which reconnects it."""
        try:
            conn.disconnect()
        finally:
            self.pool.release(conn)
