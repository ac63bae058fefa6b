"""The monitor's view of each instance, published for operators and for a
restarted agent.

- ``novaproxy:{<uuid>}:monitor`` hash of flat string fields: the view its agent
  publishes (its fields: :class:`novaproxy.monitor_view.MonitorView`), replaced as a whole and
  refreshed with a TTL, so the view of a VM no agent watches any more goes away.
"""

from __future__ import annotations

import redis

from novaproxy.redis_schema import keyspace


def monitor_key(instance: str) -> str:
    return keyspace.instance_key(instance, "monitor")


def publish_monitor(client: redis.Redis, views: dict, ttl: float) -> None:
    """instance -> the monitor's view of it (flat string fields), for operators."""
    pipe = client.pipeline(transaction=False)
    for instance, view in views.items():
        key = monitor_key(instance)
        pipe.delete(key)
        pipe.hset(key, mapping={k: str(v) for k, v in view.items()})
        pipe.expire(key, int(ttl))
    pipe.execute()


def monitor_view(client: redis.Redis, instance: str) -> dict:
    """The last published view of one instance ({} if none), e.g. for a restarted agent."""
    return client.hgetall(monitor_key(instance))


def all_monitored(client: redis.Redis) -> dict:
    """instance -> its monitor view, for every monitored instance (a SCAN)."""
    keys = keyspace.scan(client, "monitor")
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {keyspace.instance_of(k): v for k, v in zip(keys, pipe.execute()) if v}
