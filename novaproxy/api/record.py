"""One negotiation's operation record, as the proxy writes it.

The record (states: :mod:`novaproxy.operations`; keys: :mod:`novaproxy.redis_schema`)
is written before the prepare goes out and moved as the request goes on, so
that whatever happens to this process, the agent closes the operation from it
and Nova's evidence. Every write is bounded by Redis's command timeout; a
failure marks the negotiation's Redis as failed and is logged, never raised.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis
import webob

from guestd import protocol
from novaproxy import audit, operations, redis_schema, replies
from novaproxy.api import policy
from novaproxy.api._guest import NegotiationRedis
from novaproxy.api.classify import Operation

LOG = logging.getLogger(__name__)


def nova_request(resp: webob.Response, environ: dict) -> str:
    """Nova's id of the request (its instance action carries it)."""
    return (resp.headers.get("x-openstack-request-id")
            or resp.headers.get("x-compute-request-id")
            or environ.get("openstack.request_id") or "")


class OperationRecord:
    """The record of one operation on one server. ``op`` is the operation as the guest
    hears of it (a resize's sizes are added before the prepare)."""

    def __init__(self, link: NegotiationRedis, pol: policy.Policy, op: Operation,
                 instance: str) -> None:
        self.link = link
        self.policy = pol
        self.op = op
        self.instance = instance
        self.id = uuid.uuid4().hex  # the operation's id, in its record and notices
        self.written = False  # the record of intent is written: a prepare may go out

    @property
    def redis(self) -> redis.Redis:
        return self.link.client

    def earlier_undecided(self) -> str:
        """Why an earlier operation of the server must be closed before this one is put to
        the guest ("" if none): its notices come first, and whether Nova acted on it is
        not known yet (its proxy stopped, or Nova's answer was lost). Bounded by the
        record's ``decide_by``, by which the agent has decided it."""
        try:
            ops = redis_schema.operations_of(self.redis, [self.instance]).get(self.instance, [])
        except redis.RedisError as exc:
            self.link.failed = True
            LOG.warning("%s of %s: could not read earlier operations (%s)", self.op.event,
                        self.instance, exc)
            return ""
        now = time.time()
        for op in ops:
            left = float(op.get("decide_by", 0)) - now
            if op.get("state") in operations.UNDECIDED and left > 0:
                return (f"the earlier {op.get('event')} of server {self.instance} (operation "
                        f"{op.get('id')}) is not closed yet: whether Nova acted on it is "
                        f"decided within {left:.0f}s")
        return ""

    def write_intent(self, owner: str, host: str) -> None:
        """Record the operation before the prepare goes out: whatever happens next (this
        process dies, Nova fails), the agent closes it from this record."""
        now = time.time()
        record = self._fields(prepared=True, notify=True, now=now)
        record.update(state=operations.PREPARING, owner=owner, host=host,
                      decide_by=now + self.policy.prepare_timeout + self.policy.outcome_wait)
        try:
            redis_schema.record_operation(self.redis, self.instance, record,
                                          self.policy.operation_timeout, host=host)
        except redis.RedisError as exc:
            self.link.failed = True
            LOG.warning("%s of %s: could not record the operation (%s); no prepare is sent",
                        self.op.event, self.instance, exc)
            return
        self.written = True

    def mark_forwarding(self, owner: str) -> str:
        """Move the record to ``forwarding`` while the lock is still ``owner``'s; why not,
        if it could not be (then the request must not go to Nova)."""
        now = time.time()
        try:
            moved = redis_schema.update_operation(
                self.redis, self.instance, self.id, [operations.PREPARING],
                {"state": operations.FORWARDING, "forwarded_at": now,
                 "decide_by": now + self.policy.outcome_wait}, holding=owner)
        except redis.RedisError as exc:
            self.link.failed = True
            return f"the operation could not be marked as sent to Nova (Redis: {exc})"
        return "" if moved else "the negotiation lost its hold on the server"

    def settle(self, state: str, why: str, **changes) -> None:
        """What became of the forwarded request, for the agent that closes the record."""
        changes.update(state=state, why=why)
        if state == operations.UNKNOWN:
            changes["decide_by"] = time.time() + self.policy.outcome_wait
            LOG.warning("%s of %s: %s; whether Nova acted is left to its instance actions "
                        "(the agent decides within %.0fs)", self.op.event, self.instance, why,
                        self.policy.outcome_wait)
        try:
            redis_schema.update_operation(self.redis, self.instance, self.id,
                                          [operations.FORWARDING], changes)
        except redis.RedisError as exc:
            self.link.failed = True
            LOG.warning("%s of %s: could not note that %s (%s); the agent finds Nova's "
                        "action by itself", self.op.event, self.instance, why, exc)

    def write_unprepared(self, request_id: str, host: str | None, notify: bool) -> None:
        """Nova took an operation nobody prepared for: the agent hosting the VM sends the
        end when it is over, and its monitor knows the silence meanwhile is intended
        (``notify``: the guest hears of it; not where only monitoring is on)."""
        if self.link.failed:
            LOG.warning("%s of %s: Redis failed this negotiation; the operation is not "
                        "recorded, so the guest will get no end notice", self.op.event,
                        self.instance)
            return
        record = self._fields(False, notify, time.time())
        record.update(state=operations.FORWARDED, nova_request=request_id)
        try:
            host = host or redis_schema.route_of(self.redis, self.instance)
            record["host"] = host
            redis_schema.record_operation(self.redis, self.instance, record,
                                          self.policy.operation_timeout, host=host)
        except redis.RedisError as exc:
            self.link.failed = True
            LOG.warning("%s of %s: could not record the operation (%s); the guest will get "
                        "no end notice", self.op.event, self.instance, exc)

    def claim_closing(self, phase: str, timeout: float, why: str = "") -> str:
        """Take the record's closing notice (``phase``: abort, or the end of an operation
        carried out in the guest) for this process, for the ``timeout`` of its delivery;
        an abort also marks the record refused, with ``why``. The claim, or "" if an agent
        is closing it already or Redis failed (it is then the agent's). In the background
        only: it tries Redis even after a failure."""
        claim = f"proxy:{uuid.uuid4().hex}"
        try:
            claimed = redis_schema.claim_operation(self.redis, self.instance, self.id, claim,
                                                   timeout + 5)
            if phase == protocol.ABORT:
                redis_schema.update_operation(self.redis, self.instance, self.id,
                                              operations.UNDECIDED,
                                              {"state": operations.REFUSED, "why": why})
        except redis.RedisError as exc:
            LOG.warning("%s of %s of %s left to the agent (Redis: %s)", phase, self.op.event,
                        self.instance, exc)
            return ""
        return claim if claimed else ""

    def closing_sent(self, phase: str, claim: str, reply: replies.Reply, why: str,
                     host: str | None) -> None:
        """Close the record if the guest heard its closing notice (``phase``: end or
        abort); else give the claim back, and the agent tries again when the guest
        answers."""
        try:
            if reply.outcome in replies.DELIVERED:
                if redis_schema.finish_operation(self.redis, self.instance, self.id):
                    redis_schema.audit(self.redis, audit.OPERATION, self.instance,
                                       event=self.op.event, action=self.op.action,
                                       outcome=f"{phase}-delivered", why=why,
                                       voters=reply.voters, host=host or "",
                                       operation=self.id, nova_request="")
            else:
                redis_schema.release_claim(self.redis, self.instance, self.id, claim)
        except redis.RedisError as exc:
            LOG.warning("%s of %s of %s: the record is left to the agent (Redis: %s)", phase,
                        self.op.event, self.instance, exc)

    def _fields(self, prepared: bool, notify: bool, now: float) -> dict:
        return {"id": self.id, "event": self.op.event, "action": self.op.action,
                "details": self.op.details, "prepared": prepared, "notify": notify,
                "created": now, "expires": now + self.policy.operation_timeout,
                "end_timeout": self.policy.end_timeout}
