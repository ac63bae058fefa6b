"""The request and reply streams: how a proxy asks the guests of one host and
hears back.

- ``novaproxy:requests:{<host>}`` stream, consumer group ``agents``: what the
  proxy asks the guests on one compute host; an entry's fields are ``request``
  (JSON, :mod:`guestd.protocol`'s request) and ``reply_to`` (the reply stream).
  The group remembers what an agent took but did not acknowledge, so a
  restarted agent picks it up again.
- ``novaproxy:replies:{<proxy>}`` stream: the agents' answers for one proxy
  process (:class:`novaproxy.replies.Reply`), read by that process alone; it
  goes away once the process has been idle for ``REPLY_STREAM_TTL``.
"""

from __future__ import annotations

import json

import redis

from novaproxy.redis_schema.connection import check_block
from novaproxy.redis_schema.keyspace import PREFIX
from novaproxy.replies import Reply

AGENT_GROUP = "agents"
REPLY_STREAM_TTL = 600  # an idle proxy's reply stream goes away after this
REPLY_STREAM_MAXLEN = 10_000
REQUEST_STREAM_MAXLEN = 10_000


def requests_stream(host: str) -> str:
    return f"{PREFIX}:requests:{{{host}}}"


def replies_stream(proxy_id: str) -> str:
    return f"{PREFIX}:replies:{{{proxy_id}}}"


def enqueue(client: redis.Redis, host: str, request: dict, reply_to: str) -> str:
    """Queue a guest request for ``host``'s agent; returns the entry id."""
    return client.xadd(requests_stream(host),
                       {"request": json.dumps(request), "reply_to": reply_to},
                       maxlen=REQUEST_STREAM_MAXLEN, approximate=True)


def entry_age(entry_id: str, redis_now: float) -> float:
    """Seconds since the entry was added, in Redis's own clock (no host clock skew)."""
    return redis_now - int(entry_id.split("-", 1)[0]) / 1000.0


def ensure_group(client: redis.Redis, host: str) -> bool:
    """Create ``host``'s request stream and consumer group unless they exist; True if
    created. From id 0: requests queued before the group existed are taken too."""
    try:
        client.xgroup_create(requests_stream(host), AGENT_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def is_missing_group(exc: redis.ResponseError) -> bool:
    """The error of a group read whose stream or group is gone (Redis lost its data)."""
    return str(exc).startswith("NOGROUP")


def take_requests(client: redis.Redis, host: str, consumer: str, pending: bool,
                  block_ms: int, count: int = 64) -> list:
    """``(entry_id, request, reply_to)`` for this host; ``pending`` re-reads unacknowledged ones."""
    start = "0" if pending else ">"
    check_block(client, None if pending else block_ms)
    streams = client.xreadgroup(AGENT_GROUP, consumer, {requests_stream(host): start},
                                count=count, block=None if pending else block_ms)
    out = []
    for _, entries in streams or []:
        for entry_id, fields in entries:
            if not fields:  # acknowledged and trimmed meanwhile
                continue
            try:
                out.append((entry_id, json.loads(fields["request"]), fields["reply_to"]))
            except (KeyError, ValueError):
                out.append((entry_id, None, fields.get("reply_to")))
    return out


def acknowledge(client: redis.Redis, host: str, entry_id: str) -> None:
    client.xack(requests_stream(host), AGENT_GROUP, entry_id)


def send_reply(client: redis.Redis, host: str, entry_id: str, reply_to: str,
               reply: Reply) -> None:
    """Reply and acknowledge the request in one transaction: never one without the other."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(reply_to, reply.fields(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)
    pipe.expire(reply_to, REPLY_STREAM_TTL)
    pipe.xack(requests_stream(host), AGENT_GROUP, entry_id)
    pipe.execute()


def read_replies(client: redis.Redis, reply_to: str, last_id: str, block_ms: int) -> list:
    """``(entry_id, Reply | None)`` after ``last_id``; None for an unreadable entry."""
    check_block(client, block_ms)
    out = []
    for _, entries in client.xread({reply_to: last_id}, block=block_ms, count=256) or []:
        for entry_id, fields in entries:
            try:
                out.append((entry_id, Reply.from_fields(fields)))
            except (KeyError, ValueError, TypeError):
                out.append((entry_id, None))
    return out
