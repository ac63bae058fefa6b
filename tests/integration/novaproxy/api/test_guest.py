"""The proxy's Redis channel against a real redis-server: every wait bounded by redis_timeout."""

import time

import pytest
import redis

from novaproxy.api._guest import GuestChannel


def test_a_command_waits_for_a_free_connection_no_longer_than_redis_timeout(redis_server):
    channel = GuestChannel(redis_server.url, max_connections=2, command_timeout=0.5)
    pool = channel.redis.connection_pool
    held = [pool.get_connection(), pool.get_connection()]  # every negotiation busy
    try:
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            channel.redis.ping()
        assert time.monotonic() - started < 0.5 + 0.5
    finally:
        for connection in held:
            pool.release(connection)
    assert channel.redis.ping()
