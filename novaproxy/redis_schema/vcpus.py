"""The vCPUs each instance was last scaled to, for operators.

- ``novaproxy:{<uuid>}:vcpus`` hash: ``online`` (how many vCPUs the guest has online
  after the change), ``plugged`` (how many it has plugged), ``operation`` (the scale
  operation's id) and ``time`` (when it was recorded, Unix seconds). Written whole by
  whoever carried the change out and kept ``VCPUS_TTL``: the guest's own view is the
  truth, this is the record of what was last asked and done, so ``novaproxy status``
  can show it without asking the guest.
"""

from __future__ import annotations

import time

import redis

from novaproxy.redis_schema import keyspace

VCPUS_TTL = 7 * 24 * 3600.0  # a week: long enough to explain a server's vCPUs later


def vcpus_key(instance: str) -> str:
    return keyspace.instance_key(instance, "vcpus")


def record_vcpus(client: redis.Redis, instance: str, online: int, plugged: int,
                 operation: str, ttl: float = VCPUS_TTL) -> None:
    """Record that ``instance`` has ``online`` of ``plugged`` vCPUs online after
    ``operation``; the fields and the TTL are set in one transaction."""
    key = vcpus_key(instance)
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping={"online": str(online), "plugged": str(plugged),
                            "operation": operation, "time": repr(time.time())})
    pipe.pexpire(key, max(int(ttl * 1000), 1))
    pipe.execute()


def vcpus_of(client: redis.Redis, instance: str) -> dict | None:
    """``{"online": int, "plugged": int, "operation": str, "time": float}`` as last
    recorded, or None when there is no record or any field of it is missing or not a
    number (a record that cannot be read says nothing)."""
    return _record(client.hgetall(vcpus_key(instance)))


def all_vcpus(client: redis.Redis) -> dict:
    """instance -> its readable record, for every instance with one (a SCAN, for
    ``novaproxy status``)."""
    keys = keyspace.scan(client, "vcpus")
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    records = {keyspace.instance_of(k): _record(v) for k, v in zip(keys, pipe.execute())}
    return {instance: record for instance, record in records.items() if record is not None}


def _record(fields: dict) -> dict | None:
    try:
        return {"online": int(fields["online"]), "plugged": int(fields["plugged"]),
                "operation": str(fields["operation"]), "time": float(fields["time"])}
    except (KeyError, ValueError, TypeError):
        return None
