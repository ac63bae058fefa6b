"""Hands a VM the peer notices waiting for it (``novaproxy:{<uuid>}:peers``), each as
a spool request of event ``group``, phase ``peer``.

The ``group-inbox`` thread calls :meth:`PeerDelivery.deliver_waiting` when it reads a
wake-up entry from the VM's inbox: the whole hash is drained, latest state per peer,
until it is empty (a notice kept meanwhile is delivered in the same drain; one kept
once it is empty wakes the relay again). A notice leaves the hash only once guestd
answered it, and only if no newer notice of that peer replaced it meanwhile.
"""

from __future__ import annotations

import logging
from typing import Callable

import redis

from guestd import group_protocol as gp
from novaproxy import peers
from novaproxy.redis_schema import peers as peer_keys

LOG = logging.getLogger("novaproxy.agent.peer_relay")
DELIVER_TIMEOUT = 5.0  # seconds for a guest to take one notice
MAX_ROUNDS = 4  # re-reads of the hash per wake-up (notices kept while delivering)


class PeerDelivery:
    """Delivers the notices waiting for a VM; ``deliver(req, timeout)`` is the
    agent's :meth:`Deliverer.deliver`."""

    def __init__(self, client: redis.Redis, deliver: Callable) -> None:
        self._redis = client
        self._deliver = deliver

    def deliver_waiting(self, instance: str) -> bool:
        """Deliver what waits for ``instance``; False when its guest did not take one
        (the wake-up stays, and it is tried again)."""
        for _ in range(MAX_ROUNDS):
            waiting = peer_keys.waiting_notices(self._redis, instance)
            if not waiting:
                return True
            for raw, notice in waiting:
                try:
                    req = peers.peer_request(instance, notice, DELIVER_TIMEOUT)
                except KeyError as exc:  # only the host writes notices
                    LOG.warning("instance %s: peer notice unreadable, dropped: %s", instance,
                                exc)
                    peer_keys.delivered(self._redis, instance, raw, notice)
                    continue
                reply = self._deliver(req, DELIVER_TIMEOUT)
                if not gp.delivered(reply.outcome, reply.voters):
                    LOG.info("instance %s: peer notice %s not delivered (%s %s); tried again",
                             instance, req["id"], reply.outcome, reply.detail)
                    return False
                peer_keys.delivered(self._redis, instance, raw, notice)
        return not peer_keys.waiting_notices(self._redis, instance)
