"""Recovery claims: at most one recovery of an instance at a time, cluster-wide,
and at most so many within a window.

- ``novaproxy:{<uuid>}:recovery`` string: who claimed the recovery under way,
  with a TTL (the time a recovered guest has to answer again).
- ``novaproxy:{<uuid>}:recoveries`` sorted set, time -> time: the recoveries
  started within the rate-limit window.
"""

from __future__ import annotations

import redis

from novaproxy.redis_schema import keyspace, scripts
from novaproxy.redis_schema.connection import redis_time

CLAIMED, ALREADY_CLAIMED, RATE_LIMITED = "claimed", "already-claimed", "rate-limited"


def recovery_key(instance: str) -> str:
    return keyspace.instance_key(instance, "recovery")


def recoveries_key(instance: str) -> str:
    return keyspace.instance_key(instance, "recoveries")


def claim_recovery(client: redis.Redis, instance: str, owner: str, hold: float,
                   window: float, allowed: int) -> str:
    """:data:`CLAIMED`, :data:`ALREADY_CLAIMED` or :data:`RATE_LIMITED`.

    The claim lasts ``hold`` seconds (the time a recovered guest has to answer
    again); at most ``allowed`` recoveries start within ``window`` seconds, in
    Redis's clock (every host's the same).
    """
    now = redis_time(client)
    return scripts.CLAIM_RECOVERY(keys=[recovery_key(instance), recoveries_key(instance)],
                                  args=[owner, int(hold * 1000), f"{now:.6f}", window, allowed],
                                  client=client)


def recovery_under_way(client: redis.Redis, instance: str) -> bool:
    return bool(client.exists(recovery_key(instance)))


def release_recovery(client: redis.Redis, instance: str, owner: str) -> None:
    """The guest answered again: a later failure is a new one."""
    scripts.COMPARE_AND_DELETE(keys=[recovery_key(instance)], args=[owner], client=client)
