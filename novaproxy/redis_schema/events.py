"""The audit trail: one capped stream of events, for operators.

- ``novaproxy:events`` stream, capped at about ``EVENTS_MAXLEN`` entries: one
  entry per event, fields ``kind`` (:mod:`novaproxy.audit` names the kinds and
  their fields), ``instance``, ``time`` and the kind's own fields.
"""

from __future__ import annotations

import json
import time

import redis

from novaproxy.redis_schema.connection import check_block
from novaproxy.redis_schema.keyspace import PREFIX

EVENTS_STREAM = f"{PREFIX}:events"
EVENTS_MAXLEN = 100_000


def audit(client: redis.Redis, kind: str, instance: str, **details) -> None:
    """Append one event of ``kind`` (one of :mod:`novaproxy.audit`'s) to the stream;
    details that are not strings are written as JSON."""
    fields = {"kind": kind, "instance": instance, "time": f"{time.time():.3f}"}
    fields.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in details.items()})
    client.xadd(EVENTS_STREAM, fields, maxlen=EVENTS_MAXLEN, approximate=True)


def read_events(client: redis.Redis, count: int, after: str | None = None,
                block_ms: int | None = None) -> list:
    """Newest ``count`` events (oldest first), or those after ``after``."""
    if after is None:
        return list(reversed(client.xrevrange(EVENTS_STREAM, count=count)))
    check_block(client, block_ms)
    streams = client.xread({EVENTS_STREAM: after}, count=count, block=block_ms)
    return [entry for _, entries in streams or [] for entry in entries]
