"""Publishing peer state notices: one entry point for whoever sees the event (the
proxy at a negotiation's prepare or abort, the agent for monitor transitions, libvirt
events, operation endings and lost hosts).

:meth:`Notifier.notify` never blocks its caller: the notice goes on a bounded queue
that one background thread empties (a full queue drops the notice, logged), so a slow
Redis or Nova never holds up a negotiation or the monitor. The thread finds who is
told (:func:`novaproxy.peers.told`, through the membership cache, or Nova when the
caller's ``members`` reads it), takes the peer's next seq and keeps the notice,
coalesced, for each recipient (:func:`redis_schema.peers.keep_notice`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable

import redis

from novaproxy import groups, peers, redis_schema
from novaproxy.groups import Group, Member
from novaproxy.redis_schema import peers as peer_keys

LOG = logging.getLogger("novaproxy.peer_notify")
BACKLOG = 256  # notices waiting to be published; beyond, new ones are dropped


class CachedMembership:
    """Group membership as the agents' cache holds it (for a process without Nova
    reads of its own: the proxy); what is not cached is not known."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def member(self, instance: str) -> Member:
        return redis_schema.cached_member(self._redis, instance) or Member(instance, False)

    def group(self, gid: str, fresh: bool = False) -> Group | None:
        """The cached group (there is nothing fresher to read here)."""
        return redis_schema.cached_group(self._redis, gid)

    def peers(self, group: Group) -> dict:
        return redis_schema.cached_members(self._redis, list(group.members))


class Notifier:
    """Publishes notices in a background thread of its own; ``members`` answers
    ``member(instance)``, ``group(gid)``, ``peers(group)`` (agent: Nova through the
    cache; proxy: :class:`CachedMembership`); ``redis_now`` is Redis's wall time."""

    def __init__(self, client: redis.Redis, members, redis_now: Callable[[], float],
                 backlog: int = BACKLOG) -> None:
        self._redis = client
        self._members = members
        self._redis_now = redis_now
        self._queue: queue.Queue = queue.Queue(backlog)
        self._thread_pid: int | None = None  # the process its thread runs in (forks)
        self._lock = threading.Lock()

    def notify(self, peer: str, state: str, cause: str = "") -> None:
        """Tell ``peer``'s group that it is in ``state`` now (never blocks)."""
        self._start()
        try:
            self._queue.put_nowait((peer, state, cause, time.monotonic()))
        except queue.Full:
            LOG.warning("instance %s: peer notice %r dropped: %d waiting already", peer,
                        state, self._queue.maxsize)

    def _start(self) -> None:
        with self._lock:
            if self._thread_pid != os.getpid():  # none yet, or not in this (forked) process
                self._thread_pid = os.getpid()
                threading.Thread(target=self._run, name="peer-notices", daemon=True).start()

    def _run(self) -> None:
        while True:
            peer, state, cause, at = self._queue.get()
            try:
                self.publish(peer, state, cause, at)
            except Exception as exc:  # Redis, Nova, anything: logged, never fatal
                LOG.warning("instance %s: peer notice %r not published: %s", peer, state, exc)

    def publish(self, peer: str, state: str, cause: str = "",
                at: float | None = None) -> list:
        """Publish one notice now (``at``: when it happened, ``time.monotonic()``);
        the members told."""
        subject = self._members.member(peer)
        group = self._members.group(subject.group) if subject.known and subject.group \
            else None
        bounded = group is not None and len(group.members) <= groups.MAX_GROUP
        told = peers.told(peer, subject, group, self._members.peers(group) if bounded else {})
        if not told:
            LOG.debug("instance %s: %s told to nobody", peer, state)
            return []
        since = self._redis_now() - (time.monotonic() - at if at is not None else 0.0)
        notice = peers.notice(peer, subject.name, state, cause, since,
                              peer_keys.next_seq(self._redis, peer))
        for recipient in told:
            peer_keys.keep_notice(self._redis, recipient, notice)
        LOG.info("instance %s: %s (%s) told to %d member(s), seq %d", peer, state, cause,
                 len(told), notice["seq"])
        return told
