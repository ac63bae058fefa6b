"""Negotiation locks: one negotiation at a time per instance, cluster-wide.

- ``novaproxy:{<uuid>}:lock`` string: the token of the negotiation in flight
  for the instance; a short lease its proxy renews while it works, so a proxy
  that dies frees the server within one lease. Only the token's holder renews
  or releases it.
"""

from __future__ import annotations

import redis

from novaproxy.redis_schema import keyspace, scripts


def lock_key(instance: str) -> str:
    return keyspace.instance_key(instance, "lock")


def acquire_lock(client: redis.Redis, instance: str, owner: str, ttl: float) -> bool:
    return bool(client.set(lock_key(instance), owner, nx=True, px=int(ttl * 1000)))


def renew_lock(client: redis.Redis, instance: str, owner: str, ttl: float) -> bool:
    """Extend ``owner``'s lock by ``ttl`` seconds from now; False if it is no longer theirs."""
    return bool(scripts.COMPARE_AND_EXTEND(keys=[lock_key(instance)],
                                           args=[owner, int(ttl * 1000)], client=client))


def release_lock(client: redis.Redis, instance: str, owner: str) -> None:
    scripts.COMPARE_AND_DELETE(keys=[lock_key(instance)], args=[owner], client=client)


def lock_owner(client: redis.Redis, instance: str) -> str | None:
    """The token holding the instance's negotiation lock (None: no negotiation)."""
    return client.get(lock_key(instance))


def all_locks(client: redis.Redis) -> dict:
    """instance -> milliseconds left, for every negotiation in flight."""
    keys = keyspace.scan(client, "lock")
    return {keyspace.instance_of(k): client.pttl(k) for k in keys}
