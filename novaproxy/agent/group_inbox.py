"""The ``group-inbox`` thread: hand the messages queued for the messaging VMs served
here to their guests, in order, each until guestd had it or it expired.

One blocking ``XREAD`` over the inboxes of those VMs, from each one's stored
position; a VM's messages are then delivered on a worker of the agent's pool (one
worker per VM at a time, so a slow guest holds up only itself), each as a spool
request. A VM being delivered to is left out of the next read; when its deliveries
end, the worker wakes the read (an entry in the host's ``inbox-wake`` stream, which
every read also waits on), so its next message waits for no block to time out.

The position moves past a message once guestd has it (or it expired), so an agent
restarted mid-delivery delivers again from there: at least once, and
guestd hands each message id to its applications once. A guest that does not answer,
or whose answer names nobody that took the message (no application registered yet,
early in a boot), is tried again after ``RETRY`` seconds, until its messages expire.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import redis

from guestd import group_protocol as gp
from guestd import protocol
from novaproxy import groups, redis_schema
from novaproxy.agent.peer_relay import PeerDelivery
from novaproxy.redis_schema import peers as peer_keys

LOG = logging.getLogger("novaproxy.agent.group_inbox")
BLOCK_MS = 1000  # longest wait for a message; bounds how fast the served set is re-read
PER_ROUND = 16  # messages read per inbox per round
DELIVER_TIMEOUT = 5.0  # seconds for a guest to take one message
RETRY = 2.0  # seconds before a guest that did not answer is tried again


class InboxRelay:
    """Delivers the inboxes of the messaging VMs that ``served`` lists (as the membership
    cache knows them); ``submit`` runs a VM's deliveries on the agent's pool."""

    def __init__(self, client: redis.Redis, host: str, deliver: Callable,
                 served: Callable[[], set], submit: Callable,
                 redis_now: Callable[[], float], stopping: threading.Event) -> None:
        self._redis = client
        self._host = host
        self._deliver = deliver
        self._peers = PeerDelivery(client, deliver)  # wake-up entries: peer notices
        self._served = served
        self._submit = submit
        self._redis_now = redis_now
        self._stopping = stopping
        self._lock = threading.Lock()
        self._busy: set = set()  # VMs whose deliveries run on the pool now
        self._retry_at: dict = {}  # VM -> time.monotonic() before which it is not tried
        self._freed = threading.Event()  # a VM's deliveries ended: it may be read again

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.round(BLOCK_MS):  # all busy or waiting: until one is freed
                    self._freed.wait(BLOCK_MS / 1000)
            except (redis.RedisError, OSError) as exc:
                LOG.warning("group inboxes: Redis: %s", exc)
                self._stopping.wait(BLOCK_MS / 1000)
            except Exception:
                LOG.exception("group inboxes: relay round failed; continuing")
                self._stopping.wait(BLOCK_MS / 1000)

    def round(self, block_ms: int | None) -> bool:
        """Read the inboxes once (waiting up to ``block_ms``) and start their deliveries;
        False when no inbox was ready to read."""
        self._freed.clear()  # from now on, a VM whose deliveries end sets it
        ready = self._ready()
        if not ready:
            return False
        positions = redis_schema.inbox_positions(self._redis, ready)
        if self._freed.is_set():  # ended since this round began: its wake may be gone
            block_ms = None
        for instance, entries in redis_schema.read_inboxes(
                self._redis, positions, block_ms, PER_ROUND, self._host).items():
            with self._lock:
                self._busy.add(instance)
            try:
                self._submit(self._deliver_all, instance, entries)
            except RuntimeError:  # the pool shut down: the agent is stopping
                break
        return True

    def _ready(self) -> list:
        """The messaging VMs served here that are neither being delivered to nor waiting.
        Only the membership cache is read (the outbox poller keeps it filled from Nova),
        so a slow Nova never holds this thread up."""
        now = time.monotonic()
        with self._lock:
            candidates = [i for i in sorted(self._served())
                          if i not in self._busy and self._retry_at.get(i, 0.0) <= now]
        members = redis_schema.cached_members(self._redis, candidates)
        return [i for i in candidates if i in members and members[i].messaging]

    def _deliver_all(self, instance: str, entries: list) -> None:
        try:
            for entry_id, fields in entries:
                if not self._deliver_one(instance, entry_id, fields):
                    with self._lock:
                        self._retry_at[instance] = time.monotonic() + RETRY
                    return
            with self._lock:
                self._retry_at.pop(instance, None)
        except (redis.RedisError, OSError) as exc:
            LOG.warning("instance %s: group inbox: Redis: %s", instance, exc)
        finally:
            with self._lock:
                self._busy.discard(instance)
            self._freed.set()
            try:
                redis_schema.wake_inbox_reader(self._redis, self._host)
            except (redis.RedisError, OSError):
                pass  # the read returns within BLOCK_MS anyway

    def _deliver_one(self, instance: str, entry_id: str, fields: dict) -> bool:
        """Deliver one message; True when the position may move past it."""
        if peer_keys.is_wake(fields):
            if not self._peers.deliver_waiting(instance):
                return False
            redis_schema.set_inbox_position(self._redis, instance, entry_id)
            return True
        gid, message_id = fields.get("group", ""), fields.get("id", "")
        try:
            expires = float(fields["expires"])
            body = json.loads(fields["body"])
            req = groups.message_request(instance, fields, body, DELIVER_TIMEOUT)
        except (KeyError, ValueError, TypeError) as exc:  # only agents write inboxes
            LOG.warning("instance %s: inbox entry %s unreadable, skipped: %s", instance,
                        entry_id, exc)
            redis_schema.set_inbox_position(self._redis, instance, entry_id)
            return True
        if self._redis_now() > expires:
            state = groups.EXPIRED
        else:
            reply = self._deliver(req, DELIVER_TIMEOUT)
            if not gp.delivered(reply.outcome, reply.voters):
                why = (f"{reply.outcome} {reply.detail}" if reply.outcome != protocol.ACCEPT
                       else "nobody in the guest takes group messages yet")
                LOG.info("instance %s: message %s not delivered (%s); tried again",
                         instance, message_id, why)
                return False
            state = groups.DELIVERED
        # The report first: an agent killed between the two delivers the message again
        # (guestd hands it out once), where the other order would leave it pending.
        redis_schema.mark_report(self._redis, gid, message_id, instance, state)
        redis_schema.set_inbox_position(self._redis, instance, entry_id)
        return True
