"""What system tests read back from Nova and from the audit trail."""

import time

from novaproxy import redis_schema


def host_of(stack, server_id):
    return getattr(stack.nova(direct=True).servers.get(server_id), "OS-EXT-SRV-ATTR:host")


def events_of(stack, server_id, kind, event, timeout=5.0):
    """Audit events of ``kind`` for ``event`` (they follow the notice: wait for one)."""
    client = redis_schema.connect(stack.redis.url)
    deadline = time.monotonic() + timeout
    while True:
        found = [f for _, f in redis_schema.read_events(client, 500)
                 if f["instance"] == server_id and f["kind"] == kind and f["event"] == event]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
