"""Operation records: what an instance's guest is owed a closing notice for.

:mod:`novaproxy.operations` owns the records' fields and states; this module
stores them.

- ``novaproxy:{<uuid>}:ops`` hash, op id -> JSON: the instance's operation
  records, written before the prepare goes out and removed once the
  operation's closing notice (end or abort) was delivered or nothing is left to
  tell. Every state change is a compare-and-set (``UPDATE_OPERATION``). The
  agent now hosting the instance, or the one it was negotiated on, closes them.
- ``novaproxy:operations:{<host>}`` set: instances negotiated on that host that
  have (or had) operation records, so its agent follows them even after they
  left the host or while its own memory was lost to a restart.
- ``novaproxy:{<uuid>}:claim:<op id>`` string: who is delivering the
  operation's closing notice, with a TTL: one process at a time.
"""

from __future__ import annotations

import json

import redis

from novaproxy.redis_schema import keyspace, scripts
from novaproxy.redis_schema.locks import lock_key


def ops_key(instance: str) -> str:
    return keyspace.instance_key(instance, "ops")


def host_operations_key(host: str) -> str:
    return f"{keyspace.PREFIX}:operations:{{{host}}}"


def claim_key(instance: str, op_id: str) -> str:
    return keyspace.instance_key(instance, f"claim:{op_id}")


def record_operation(client: redis.Redis, instance: str, operation: dict, ttl: float,
                     host: str | None = None) -> None:
    """Remember an operation (``operation["id"]`` names it) for ``ttl`` seconds, and
    index it under ``host``, the agent that is to follow it."""
    if host:
        # The index first: a record is never there without the way to find it.
        index = host_operations_key(host)
        pipe = client.pipeline(transaction=False)
        pipe.sadd(index, instance)
        pipe.expire(index, int(ttl) + 60)
        pipe.execute()
    key = ops_key(instance)
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, operation["id"], json.dumps(operation))
    # A safety net: each operation carries its own expiry, which the agent
    # enforces and logs; the hash goes a minute after the newest one expires.
    pipe.expire(key, int(ttl) + 60)
    pipe.execute()


def update_operation(client: redis.Redis, instance: str, op_id: str, states, changes: dict,
                     holding: str = "", released: str = "") -> bool:
    """Set ``changes`` on a record in one of ``states``; only while the negotiation
    ``holding`` still holds the server's lock, or only once ``released`` no longer
    does (a lock token, either). False if nothing was changed."""
    token, condition = (holding, "held") if holding else (released, "free")
    return bool(scripts.UPDATE_OPERATION(
        keys=[ops_key(instance), lock_key(instance)],
        args=[op_id, ",".join(states), json.dumps(changes), token, condition], client=client))


def recorded_on(client: redis.Redis, host: str) -> set:
    """Instances negotiated on ``host`` that may have operation records."""
    return set(client.smembers(host_operations_key(host)))


def forget_recorded(client: redis.Redis, host: str, instances) -> None:
    """Drop instances with no records left from ``host``'s index."""
    if instances:
        client.srem(host_operations_key(host), *instances)


def operations_of(client: redis.Redis, instances) -> dict:
    """instance -> list of its recorded operations, oldest first (unreadable ones are
    skipped)."""
    instances = list(instances)
    pipe = client.pipeline(transaction=False)
    for instance in instances:
        pipe.hgetall(ops_key(instance))
    out = {}
    for instance, fields in zip(instances, pipe.execute()):
        ops = []
        for raw in (fields or {}).values():
            try:
                ops.append(json.loads(raw))
            except ValueError:
                continue
        if ops:
            out[instance] = sorted(ops, key=lambda op: op.get("created", 0))
    return out


def all_operations(client: redis.Redis) -> dict:
    """instance -> operations, for every instance (a SCAN: for operators)."""
    keys = keyspace.scan(client, "ops")
    return operations_of(client, [keyspace.instance_of(k) for k in keys])


def claim_operation(client: redis.Redis, instance: str, op_id: str, owner: str,
                    ttl: float, replaces: str = "") -> bool:
    """Claim a recorded operation's notice for ``ttl`` seconds: one process delivers it.

    A claim whose holder starts with ``replaces`` is taken over: an agent claims only
    what it is not delivering itself, so a claim of its host's that it finds is left
    from a delivery that failed, or from its killed predecessor."""
    return bool(scripts.CLAIM_OPERATION(keys=[claim_key(instance, op_id)],
                                        args=[owner, int(ttl * 1000), replaces], client=client))


def release_claim(client: redis.Redis, instance: str, op_id: str, owner: str) -> None:
    """Give the claim up (the notice could not be delivered yet): the next round retries."""
    scripts.COMPARE_AND_DELETE(keys=[claim_key(instance, op_id)], args=[owner], client=client)


def finish_operation(client: redis.Redis, instance: str, op_id: str) -> bool:
    """Remove a recorded operation and its notice's claim; False if another process
    finished it first. (A record that comes back, from a Redis restored from an older
    snapshot, is then closed again: with the same closing request id, which guestd
    answers from memory.)"""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(ops_key(instance), op_id)
    pipe.delete(claim_key(instance, op_id))
    removed, _ = pipe.execute()
    return bool(removed)
