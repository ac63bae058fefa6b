"""Redis clients with explicit bounds, and what a caller needs to use them safely.

Every client's bounds are explicit: redis-py's own defaults differ between the
versions setup.py allows (no socket timeout and no retries in 5.x; 5 s and up
to ten retries with backoff in 8.x, which turn one hung command into a minute).
Owns no key.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SOCKET_TIMEOUT = 5.0  # seconds a command waits for Redis's answer
CONNECT_TIMEOUT = 2.0  # seconds to open a connection
POOL_TIMEOUT = 5.0  # seconds a bounded pool's caller waits for a free connection
# A command that lost its connection (Redis restarted, a pooled connection gone
# stale) is sent once more on a new one; a timeout is never retried: it would
# double the wait on a hung Redis.
RETRIES = 1


def connect(url: str, max_connections: int | None = None,
            socket_timeout: float = SOCKET_TIMEOUT,
            socket_connect_timeout: float = CONNECT_TIMEOUT,
            pool_timeout: float = POOL_TIMEOUT, retries: int = RETRIES,
            **kwargs) -> redis.Redis:
    """A client for redis://, rediss:// (TLS) or unix:// URLs, user and password included.

    Every command waits at most ``socket_timeout`` for its answer (a client for
    blocking reads needs more than its block time: :func:`blocking_timeout`), a
    connection takes at most ``socket_connect_timeout`` to open, and a command
    that lost its connection is sent again ``retries`` times (never after a
    timeout; 0: the caller decides what a failure means). With ``max_connections`` the pool is
    bounded: a caller waits at most ``pool_timeout`` for a free connection
    instead of opening one more.
    """
    options = {"decode_responses": True, "health_check_interval": 30,
               "socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout,
               "retry": Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,)),
               **kwargs}
    if max_connections is None:
        return redis.Redis.from_url(url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, **options)
    return redis.Redis(connection_pool=pool)


def blocking_timeout(block_ms: int, socket_timeout: float = SOCKET_TIMEOUT) -> float:
    """The socket timeout of a client whose reads block up to ``block_ms``: a read
    that waited its whole block still has ``socket_timeout`` for the answer."""
    return block_ms / 1000 + socket_timeout


def check_block(client: redis.Redis, block_ms: int | None) -> None:
    """A blocking read must not outlast its socket: it would fail as a timeout
    every time nothing arrived."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if block_ms and timeout is not None and timeout <= block_ms / 1000:
        raise ValueError(f"a {block_ms} ms blocking read on a client with a {timeout} s "
                         "socket timeout: use blocking_timeout()")


def redis_time(client: redis.Redis) -> float:
    """Redis's own clock, in seconds: the same for every host that asks."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def redact(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
