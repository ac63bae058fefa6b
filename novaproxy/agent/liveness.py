"""The ``liveness`` thread: this host's agent says it is alive, and notices when
another host's agent stopped saying so.

Every ``ROUND`` seconds the agent sets its liveness key (``LIVENESS_TTL_MS``, a run
token new at each start) and reads the other known hosts' keys. A host whose key
expired has lost its agent (or the agent its Redis): the members it hosted, in the
groups of the messaging VMs served here, are announced ``unreachable`` to their
groups, each once per run of that host, whichever agent claims it first
(:func:`redis_schema.peers.claim_unreachable`). An agent back after it was found
lost (started again, or its own key had expired: it was frozen, or cut off from
Redis) tells the groups of the VMs it serves that were announced unreachable that
they are ``reachable`` again.

Every ``REFRESH`` seconds, and as soon as a VM comes to be served here, it also reads
those groups from Nova again, so that their cached membership never lapses nor lags
behind a member that just booted: the lost-host search reads it, and so does the proxy,
which publishes the notices of its negotiations from the cache alone.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import redis

from novaproxy import groups, peers
from novaproxy.redis_schema import peers as peer_keys

LOG = logging.getLogger("novaproxy.agent.liveness")
ROUND = 0.5  # seconds between renewals and looks at the others: a loss is seen in
# at most LIVENESS_TTL_MS + ROUND
REFRESH = 10.0  # seconds between reads of the served VMs' groups (cached for GROUP_TTL)


class Liveness:
    """``members`` reads group membership (:class:`agent.membership.Membership`);
    ``served()`` is the set of VMs served here; ``tell(instance, state, cause)``
    publishes a peer notice."""

    def __init__(self, client: redis.Redis, host: str, members, served: Callable[[], set],
                 tell: Callable[[str, str, str], None], stopping: threading.Event) -> None:
        self._redis = client
        self._host = host
        self._members = members
        self._served = served
        self._tell = tell
        self._stopping = stopping
        self.token = uuid.uuid4().hex  # this run's
        self._announced: set = set()  # (member, token) announced or claimed elsewhere
        self._refreshed = float("-inf")  # time.monotonic() of the last read of the groups
        self._refreshed_for: set = set()  # the VMs served then
        self._previous: str | None = None  # the run to look at for announcements, once

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.round()
            except (redis.RedisError, OSError) as exc:
                LOG.warning("liveness: Redis: %s", exc)
            except Exception:  # Nova, while reading a group
                LOG.exception("liveness round failed; continuing")
            self._stopping.wait(ROUND)

    def round(self) -> list:
        """Renew this host's key and announce what became unreachable; those announced."""
        if self._previous is None:  # first round: the previous run's, if any
            self._previous = peer_keys.previous_run(self._redis, self._host)
        if not peer_keys.announce_alive(self._redis, self._host, self.token):
            self._back(self._previous or self.token)
        self._previous = self.token
        served = self._served()
        if time.monotonic() - self._refreshed >= REFRESH or served - self._refreshed_for:
            # Groups only: a member read from Nova while it builds would be cached for
            # GROUP_TTL with no host; each member's own agent caches it once it runs.
            self._groups(fresh=True)
            self._refreshed, self._refreshed_for = time.monotonic(), served
        lost = peer_keys.lost_hosts(self._redis, self._host)
        if not lost:
            return []
        announced = []
        for member, host in self._hosted_by(set(lost)):
            key = (member.instance, lost[host])
            if key in self._announced:
                continue
            self._announced.add(key)
            if peer_keys.claim_unreachable(self._redis, member.instance, lost[host]):
                LOG.warning("instance %s: host %s lost its agent; its group is told",
                            member.instance, host)
                self._tell(member.instance, peers.UNREACHABLE,
                           f"host {host} stopped answering")
                announced.append(member.instance)
        return announced

    def _back(self, run: str) -> None:
        """This host's key had expired: what was announced unreachable under ``run``
        is reachable again."""
        for instance in peer_keys.announced_unreachable(self._redis, sorted(self._served()),
                                                        run):
            LOG.info("instance %s: announced unreachable; its group is told it is back",
                     instance)
            self._tell(instance, peers.REACHABLE, f"host {self._host} answers again")

    def _groups(self, fresh: bool = False) -> list:
        """The groups of the messaging VMs served here (``fresh``: read from Nova)."""
        out, seen = [], set()
        for instance in sorted(self._served()):
            me = self._members.member(instance)
            if not (me.known and me.messaging and me.group) or me.group in seen:
                continue
            seen.add(me.group)
            group = self._members.group(me.group, fresh=fresh)
            if group is not None and len(group.members) <= groups.MAX_GROUP:
                out.append(group)
        return out

    def _hosted_by(self, hosts: set) -> list:
        """``(member, host)`` for each member of the groups of the messaging VMs served
        here that ``hosts`` host, as the membership cache (or Nova) says."""
        return [(peer, peer.host) for group in self._groups()
                for peer in self._members.peers(group).values()
                if peer.known and peer.host in hosts]
