"""Peer state notices and host liveness (``docs/group-messaging.md``).

- ``novaproxy:{<uuid>}:peers`` hash: peer -> the latest notice (JSON) not yet
  delivered to the instance; a wake-up entry (``kind=peer``) in its inbox stream
  (:func:`groups.inbox_key`) tells the relay there is something
- ``novaproxy:{<uuid>}:peer-seq`` counter: the instance's last notice seq, whoever
  published it
- ``novaproxy:{host:<host>}:alive`` string: the host's agent run token, for
  ``LIVENESS_TTL`` and renewed well within it; gone: the agent is
- ``novaproxy:hosts`` hash: host -> its agent's last run token (the hosts to watch)
- ``novaproxy:{<uuid>}:unreachable:<token>`` string: the claim of the agent that
  announces the instance unreachable once the run ``token`` of its host went away
"""

from __future__ import annotations

import json

import redis

from novaproxy import groups
from novaproxy.redis_schema import keyspace, scripts
from novaproxy.redis_schema.groups import INBOX_TTL, inbox_key

PEERS_TTL = INBOX_TTL  # the notices waiting go with the inbox that wakes them
SEQ_TTL = 30 * 24 * 3600  # a peer's seq outlives any recipient's memory of it
LIVENESS_TTL_MS = 3000
CLAIM_TTL = 3600
HOSTS_KEY = f"{keyspace.PREFIX}:hosts"
WAKE = {"kind": "peer"}  # the inbox entry that says notices wait


def peers_key(instance: str) -> str:
    return keyspace.instance_key(instance, "peers")


def seq_key(instance: str) -> str:
    return keyspace.instance_key(instance, "peer-seq")


def alive_key(host: str) -> str:
    return f"{keyspace.PREFIX}:{{host:{host}}}:alive"


def claim_key(instance: str, token: str) -> str:
    return keyspace.instance_key(instance, f"unreachable:{token}")


def is_wake(fields: dict) -> bool:
    return fields.get("kind") == WAKE["kind"]


# -- notices ---------------------------------------------------------------------------


def next_seq(client: redis.Redis, peer: str) -> int:
    pipe = client.pipeline(transaction=True)
    pipe.incr(seq_key(peer))
    pipe.expire(seq_key(peer), SEQ_TTL)
    return int(pipe.execute()[0])


def keep_notice(client: redis.Redis, recipient: str, notice: dict) -> bool:
    """Keep ``notice`` as its peer's latest for ``recipient`` (False: one as recent waits)."""
    return bool(scripts.PEER_NOTICE(
        keys=[peers_key(recipient), inbox_key(recipient)],
        args=[notice["peer"], notice["seq"], json.dumps(notice), PEERS_TTL, groups.QUEUE_MAX],
        client=client))


def waiting_notices(client: redis.Redis, instance: str) -> list:
    """``[(raw, notice)]`` waiting for ``instance``, oldest ``since`` first (unreadable
    ones are dropped: only the host writes them)."""
    out = []
    for peer, raw in client.hgetall(peers_key(instance)).items():
        try:
            out.append((raw, json.loads(raw)))
        except ValueError:
            client.hdel(peers_key(instance), peer)
    return sorted(out, key=lambda item: (item[1].get("since", 0), item[1].get("seq", 0)))


def delivered(client: redis.Redis, instance: str, raw: str, notice: dict) -> None:
    """Forget a delivered notice, unless a newer one of that peer replaced it."""
    scripts.HASH_COMPARE_AND_DELETE(keys=[peers_key(instance)], args=[notice["peer"], raw],
                                    client=client)


# -- liveness --------------------------------------------------------------------------


def previous_run(client: redis.Redis, host: str) -> str:
    """The run token ``host``'s agent last announced ("" for none)."""
    return client.hget(HOSTS_KEY, host) or ""


def announced_unreachable(client: redis.Redis, instances: list, token: str) -> list:
    """Those of ``instances`` some agent announced unreachable for the run ``token``."""
    if not instances:
        return []
    found = client.mget([claim_key(i, token) for i in instances])
    return [i for i, claim in zip(instances, found) if claim is not None]


def announce_alive(client: redis.Redis, host: str, token: str) -> bool:
    """Renew ``host``'s liveness key; whether it was still there (False: it expired,
    and others may have found this run lost)."""
    pipe = client.pipeline(transaction=True)
    pipe.exists(alive_key(host))
    pipe.set(alive_key(host), token, px=LIVENESS_TTL_MS)
    pipe.hset(HOSTS_KEY, host, token)
    return bool(pipe.execute()[0])


def lost_hosts(client: redis.Redis, except_host: str) -> dict:
    """host -> the run token of each other known host whose liveness key is gone."""
    known = {h: t for h, t in client.hgetall(HOSTS_KEY).items() if h != except_host}
    if not known:
        return {}
    alive = client.mget([alive_key(h) for h in known])
    return {h: t for (h, t), a in zip(known.items(), alive) if a is None}


def claim_unreachable(client: redis.Redis, instance: str, token: str) -> bool:
    """Whether this caller announces ``instance`` unreachable for its host's run
    ``token`` (the first to ask, of all agents)."""
    return bool(client.set(claim_key(instance, token), "1", nx=True, ex=CLAIM_TTL))
