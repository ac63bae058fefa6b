"""Which instances this host serves, published in Redis for the proxy to route by.

Each refresh lists the guests here, publishes a route for each (with a TTL, so
a dead agent's routes go away), withdraws those that left, and lets the
hypervisor forget their clients. The same round reads Redis's clock: a
request's age is counted on it (:meth:`Routes.redis_now`).
"""

from __future__ import annotations

import logging
import time

import redis

from novaproxy import redis_schema

LOG = logging.getLogger("novaproxy.agent.routes")


class Routes:
    def __init__(self, client: redis.Redis, host: str, guests, interval: float) -> None:
        self._redis = client
        self._host = host
        self._guests = guests
        self._ttl = max(redis_schema.ROUTE_TTL, int(3 * interval))
        self._served: set = set()
        self._clock_offset = 0.0  # Redis clock minus ours

    def served(self) -> set:
        """The instances served here, as of the last refresh."""
        return set(self._served)

    def redis_now(self) -> float:
        """Redis's clock, as of this host's clock and the last refresh's offset."""
        return time.time() + self._clock_offset

    def refresh(self) -> None:
        """Publish routes for the instances here, withdraw those that left."""
        current = self._guests.instances()
        redis_schema.publish_routes(self._redis, self._host, current, self._ttl)
        gone = self._served - current
        if gone:
            redis_schema.withdraw_routes(self._redis, self._host, gone)
            self._guests.forget(gone)
        for instance in sorted(current - self._served):
            LOG.info("serving instance %s", instance)
        for instance in sorted(gone):
            LOG.info("instance %s left this host", instance)
        self._served = current
        self._clock_offset = redis_schema.redis_time(self._redis) - time.time()
