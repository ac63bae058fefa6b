"""A negotiation's hold on its server: the server's lock in Redis, held as a lease.

The lease is short and renewed every third of it while the negotiation runs:
a proxy that dies frees the server within one lease, instead of after the
whole negotiation's longest possible time. A release Redis cannot take now is
retried in the background, never in the caller's time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis

from novaproxy import redis_schema

LOG = logging.getLogger(__name__)
# Seconds a negotiation holds its server without renewing (read at each use, so a
# test can shorten it).
LOCK_LEASE = 10.0
# A lock whose release failed (Redis down) is retried in the background this long.
RELEASE_RETRY = 30.0


class Lease:
    """One negotiation's lock on one server: taken once, renewed, given back once."""

    def __init__(self, client: redis.Redis, instance: str, what: str) -> None:
        self.client = client
        self.instance = instance
        self.what = what  # "<event> of <instance>", for the log
        self.owner = ""  # the lock's token, once held: the operation record names it
        self._done = threading.Event()

    def acquire(self) -> bool:
        """Whether the server is now this negotiation's (False: another one holds it).

        Raises ``redis.RedisError``: whether it is held is then unknown.
        """
        owner = uuid.uuid4().hex
        if not redis_schema.acquire_lock(self.client, self.instance, owner, LOCK_LEASE):
            return False
        self.owner = owner
        threading.Thread(target=self._renew, daemon=True,
                         name=f"lease-{self.instance}").start()
        return True

    def _renew(self) -> None:
        """Keep the lease until it is given back (a failure is logged, and the lease then
        runs out by itself)."""
        while not self._done.wait(LOCK_LEASE / 3):
            try:
                if not redis_schema.renew_lock(self.client, self.instance, self.owner,
                                               LOCK_LEASE):
                    LOG.warning("%s: the negotiation lock was lost (expired while Redis was "
                                "unreachable?)", self.what)
                    return
            except redis.RedisError as exc:
                LOG.warning("%s: could not renew the negotiation lock: %s", self.what, exc)

    def release(self, redis_failed: bool) -> None:
        """Give the server back; in the background if Redis cannot take it now, or failed
        this negotiation already (``redis_failed``: the caller is not held for it)."""
        self._done.set()
        if not redis_failed and self._try_release():
            return

        def retry() -> None:
            deadline = time.monotonic() + RELEASE_RETRY
            while time.monotonic() < deadline:
                if self._try_release():
                    return
                time.sleep(1.0)

        threading.Thread(target=retry, name=f"release-{self.instance}", daemon=True).start()

    def _try_release(self) -> bool:
        try:
            redis_schema.release_lock(self.client, self.instance, self.owner)
        except redis.RedisError as exc:
            LOG.warning("could not release the negotiation lock of %s yet: %s",
                        self.instance, exc)
            return False
        return True
