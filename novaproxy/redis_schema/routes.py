"""Routes: which compute host serves an instance, so the proxy knows whom to ask.

- ``novaproxy:{<uuid>}:route`` string: the host, published by its agent with a
  TTL (``ROUTE_TTL`` or more) that the agent keeps refreshing; a host withdraws
  only the routes that still name it.
"""

from __future__ import annotations

import redis

from novaproxy.redis_schema import keyspace, scripts

ROUTE_TTL = 30  # seconds; agents refresh their routes well within it


def route_key(instance: str) -> str:
    return keyspace.instance_key(instance, "route")


def publish_routes(client: redis.Redis, host: str, instances, ttl: int = ROUTE_TTL) -> None:
    pipe = client.pipeline(transaction=False)
    for instance in instances:
        pipe.set(route_key(instance), host, ex=ttl)
    pipe.execute()


def withdraw_routes(client: redis.Redis, host: str, instances) -> None:
    """Remove routes that still point at ``host`` (another host may own them by now)."""
    for instance in instances:
        # Atomic compare-and-delete: a route another host published meanwhile stays.
        scripts.COMPARE_AND_DELETE(keys=[route_key(instance)], args=[host], client=client)


def route_of(client: redis.Redis, instance: str) -> str | None:
    return client.get(route_key(instance))


def all_routes(client: redis.Redis) -> dict:
    """instance -> host for every published route (a SCAN: for operators, not hot paths)."""
    keys = keyspace.scan(client, "route")
    hosts = client.mget(keys) if keys else []
    return {keyspace.instance_of(k): h for k, h in zip(keys, hosts) if h is not None}
