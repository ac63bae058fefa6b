"""What tests read back from Redis: the audit trail and the monitor's published view.

"The audit events of server X of kind K" and "wait until the monitor says S"
are asked here only, so what an event or a view looks like is read in one
place. Each call opens its own short-lived connection to the stack's Redis.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness.processes import wait_for
from novaproxy import redis_schema

if TYPE_CHECKING:
    from harness.stack import Stack

# Newest audit events read: far more than one test writes for its servers.
WINDOW = 2000


def audits(stack: Stack, instance: str, kind: str | None = None,
           event: str | None = None) -> list:
    """The audit events of ``instance`` (oldest first), of ``kind`` and ``event`` if given."""
    client = redis_schema.connect(stack.redis.url)
    try:
        found = redis_schema.read_events(client, WINDOW)
    finally:
        client.close()
    return [f for _, f in found if f["instance"] == instance
            and kind in (None, f["kind"]) and event in (None, f.get("event"))]


def wait_audits(stack: Stack, instance: str, kind: str, event: str | None = None,
                count: int = 1, timeout: float = 20.0) -> list:
    """At least ``count`` such events; they follow what the test did, so wait for them.
    Raises ``TimeoutError``."""
    def enough() -> list:
        found = audits(stack, instance, kind, event)
        return found if len(found) >= count else []

    return wait_for(enough, timeout, f"{count} {kind} event(s) of {instance}", interval=0.05)


def wait_state(stack: Stack, instance: str, state: str, timeout: float = 20.0,
               steady: float = 0.0) -> dict:
    """The monitor's published view of ``instance`` once it says ``state`` (and has said it
    for more than ``steady`` seconds). Raises ``TimeoutError``."""
    client = redis_schema.connect(stack.redis.url)

    def there() -> dict:
        view = redis_schema.monitor_view(client, instance)
        if view.get("state") != state:
            return {}
        if steady and time.time() - float(view["since"]) <= steady:
            return {}
        return view

    try:
        return wait_for(there, timeout, f"monitor state {state} of {instance}", interval=0.1)
    finally:
        client.close()
