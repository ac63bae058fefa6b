"""One negotiated request's way through the phases: vote → prepare → Nova → abort or end.

A :class:`Negotiation` is made per request once Nova has shown the server; it
holds what every phase needs (the operation, the server's canonical id, the
host its agent publishes, its lease and its operation record) and whether
Redis has failed it: after a Redis failure no further Redis call is made that
could hold the caller, only background ones.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from typing import Callable

import redis
import webob

from guestd import protocol
from novaproxy import audit, operations, peers, redis_schema, replies
from novaproxy.api import _nova, policy
from novaproxy.api._guest import REDIS_LOST, GuestChannel, NegotiationRedis
from novaproxy.api._request import NegotiationRequest
from novaproxy.api.classify import Operation
from novaproxy.api.lease import Lease
from novaproxy.api.record import OperationRecord, nova_request
from novaproxy.api.responses import IN_PROGRESS, REJECTED, cannot_ask, conflict, unavailable

LOG = logging.getLogger(__name__)


class Negotiation:
    """One lifecycle request on one server, from the lock to the caller's answer."""

    def __init__(self, app, pol: policy.Policy, channel: GuestChannel, req: NegotiationRequest,
                 op: Operation, server: dict) -> None:
        self.app = app
        self.policy = pol
        self.channel = channel
        self.req = req
        self.server = server
        self.instance: str = server.get("id", op.instance)  # canonical: set once, here
        self.link = NegotiationRedis(channel.redis)
        self.record = OperationRecord(self.link, pol, op, self.instance)
        self.lease = Lease(channel.redis, self.instance, f"{op.event} of {self.instance}")
        self.host: str | None = None
        self.prepared: replies.Reply | None = None  # the guest's answer to the prepare
        self._closing: Callable[[], None] | None = None  # the abort to send before giving back

    @property
    def op(self) -> Operation:
        """The operation as the guest hears of it (its record holds it)."""
        return self.record.op

    def run(self) -> webob.Response:
        specs = (self.server.get("flavor") or {}).get("extra_specs") or {}
        vote_timeout = self.policy.vote_timeout_for(specs)
        try:
            self.host = redis_schema.route_of(self.link.client, self.instance)
            locked = self.lease.acquire()
        except redis.RedisError as exc:
            self.link.failed = True
            return self._cannot_ask(f"Redis unavailable: {exc}") or self.forward(prepared=False)
        if not locked:
            LOG.info("%s of %s refused: another negotiation is in progress", self.op.event,
                     self.instance)
            return conflict(f"another operation on server {self.instance} is being "
                            "negotiated with its guest; retry later", IN_PROGRESS)
        try:
            return self._phases(vote_timeout)
        finally:
            closing, self._closing = self._closing, None
            if closing is None:
                self._give_back()
            else:  # the abort first, then the server: a next operation's notices follow it
                threading.Thread(target=lambda: (closing(), self._give_back()), daemon=True,
                                 name=f"abort-{self.instance}").start()

    def _give_back(self) -> None:
        self.lease.release(self.link.failed)

    def _cannot_ask(self, why: str) -> webob.Response | None:
        return cannot_ask(self.policy, self.op, self.instance, why)

    def _phases(self, vote_timeout: float) -> webob.Response:
        """vote → prepare → Nova → abort now, or end later (through the operation record)."""
        if not operations.LIFECYCLES[self.op.event].negotiable:
            return self.forward(prepared=False)
        if self.host is None:
            return (self._cannot_ask("no agent serves this instance")
                    or self.forward(prepared=False))
        earlier = self.record.earlier_undecided()
        if earlier:  # its closing comes first: the guest hears of this one after it
            LOG.info("%s of %s refused: %s", self.op.event, self.instance, earlier)
            return conflict(f"{earlier}; retry later", IN_PROGRESS)
        self.record.op = self._detailed()
        return self._negotiate(vote_timeout)

    def _negotiate(self, vote_timeout: float) -> webob.Response:
        """Vote (where the policy says so) → record → prepare → :meth:`forward`."""
        if self.policy.mode(self.op.event) == policy.VOTE:
            refusal = self._vote(vote_timeout)
            if refusal is not None:
                return refusal
        self.record.write_intent(self.lease.owner, self.host)
        self.channel.peers.notify(self.instance, peers.operation_state(
            self.op.event, peers.PREPARED), self.op.action)  # in the background
        reply, took = self._ask(protocol.PREPARE, self.policy.prepare_timeout)
        self.prepared = reply
        decision = policy.decide_prepare(self.policy, reply)
        self._audit(audit.NOTICE, reply, f"prepare sent: {decision.why}", took,
                    proceed=decision.proceed)
        if not decision.proceed:
            LOG.info("%s of %s stopped after the prepare: %s", self.op.event, self.instance,
                     decision.why)
            self.abort(decision.why)
            return conflict(f"{self.op.event} of server {self.instance} was stopped: "
                            + "; ".join(decision.reasons), REJECTED)
        if not self.record.written:  # Redis failed before the prepare: none went out
            return self.forward(prepared=False)
        why = self.record.mark_forwarding(self.lease.owner)
        if why:
            LOG.warning("%s of %s not forwarded: %s", self.op.event, self.instance, why)
            self.abort(why)
            return unavailable(f"{self.op.event} of server {self.instance} was not sent to "
                               f"Nova: {why}; its guest is told to abort; retry later")
        return self.forward(prepared=True)

    def _vote(self, timeout: float) -> webob.Response | None:
        """None to go ahead, or the 409 that carries the guest's reasons."""
        reply, took = self._ask(protocol.VOTE, timeout)
        decision = policy.decide(self.policy, reply)
        self._audit(audit.NEGOTIATION, reply, decision.why, took, proceed=decision.proceed)
        op, instance = self.op, self.instance
        if decision.proceed:
            LOG.info("%s of %s accepted in %.0f ms: %s", op.event, instance, took * 1000,
                     decision.why)
            return None
        LOG.info("%s of %s rejected in %.0f ms: %s: %s", op.event, instance, took * 1000,
                 decision.why, "; ".join(decision.reasons))
        return conflict(f"{op.event} of server {instance} was rejected by its guest: "
                        + "; ".join(decision.reasons), REJECTED)

    def forward(self, prepared: bool) -> webob.Response:
        """Nova's answer to the request. For a prepared guest: an acceptance is recorded
        for the agent to end, a refusal aborted now, anything else left to Nova's
        evidence (``unknown``): Nova may have acted on a request it failed to answer."""
        try:
            resp = self.req.get_response(self.app)
        except Exception as exc:
            if prepared:
                self.record.settle(operations.UNKNOWN,
                                   f"the request could not be forwarded: {exc}")
            raise
        status = resp.status_int
        if not prepared:
            if status < 400:
                self.record_unprepared(resp)
        elif status < 400:
            self.record.settle(operations.FORWARDED, f"Nova answered HTTP {status}",
                               nova_request=nova_request(resp, self.req.environ))
        elif status < 500:
            self.abort(f"Nova answered HTTP {status}")
        else:
            self.record.settle(operations.UNKNOWN, f"Nova answered HTTP {status}")
        return resp

    def record_unprepared(self, resp: webob.Response, notify: bool = True) -> None:
        """Nova took ``resp``'s operation with no prepare: recorded for the agent's end."""
        self.record.write_unprepared(nova_request(resp, self.req.environ), self.host, notify)

    def _detailed(self) -> Operation:
        """What the guest should know beyond the request: e.g. a resize's new size."""
        op = self.op
        if op.event != "resize" or "flavorRef" not in op.details:
            return op
        current = self.server.get("flavor") or {}
        details = {**op.details, "from": {k: current.get(k) for k in ("vcpus", "ram", "disk")}}
        flavor = _nova.show_flavor(self.req, self.app, str(op.details["flavorRef"]))
        if flavor is not None:
            details["flavor"] = {k: flavor.get(k) for k in ("id", "name", "vcpus", "ram", "disk")}
        return dataclasses.replace(op, details=details)

    def _ask(self, phase: str, timeout: float, background: bool = False,
             rid: str | None = None) -> tuple:
        """The guest's reply, and the seconds it took (the round trip operators see).

        ``background``: nobody waits for it, so it tries Redis even after a failure.
        """
        details = {**self.op.details, operations.OPERATION_DETAIL: self.record.id}
        request = protocol.request(rid or uuid.uuid4().hex, self.instance, self.op.event,
                                   phase, timeout, details, self.policy.silence)
        started = time.monotonic()
        if self.link.failed and not background:
            reply = replies.Reply(request["id"], self.instance, replies.UNREACHABLE,
                                       detail="Redis failed earlier in this negotiation",
                                       host=self.host or "")
            return reply, 0.0
        try:
            reply = self.channel.ask(self.host, request)
        except redis.RedisError as exc:
            self.link.failed = True
            reply = replies.Reply(request["id"], self.instance, replies.UNREACHABLE,
                                       detail=f"Redis unavailable: {exc}", host=self.host)
        if reply.outcome == replies.UNREACHABLE and reply.detail == REDIS_LOST:
            self.link.failed = True
        return reply, time.monotonic() - started

    def abort(self, why: str) -> None:
        """The operation is off after the prepare: once the caller has its answer, the
        record says so (the agent sends the abort if this process cannot) and this
        negotiation sends it, before it gives the server back. All of it in the
        background: Redis may be what failed."""
        if not self.record.written:
            LOG.info("%s of %s did not happen (%s); no prepare went out", self.op.event,
                     self.instance, why)
            return
        LOG.info("%s of %s did not happen (%s): sending abort", self.op.event, self.instance,
                 why)
        self.channel.peers.notify(self.instance, peers.operation_state(
            self.op.event, peers.ABORTED), why)

        def send() -> None:
            claim = self.record.claim_closing(protocol.ABORT, self.policy.prepare_timeout, why)
            if not claim:
                return  # an agent is closing it already, or Redis left it to the agent
            reply, took = self._ask(protocol.ABORT, self.policy.prepare_timeout,
                                    background=True, rid=operations.closing_id(self.record.id))
            LOG.info("abort of %s of %s: %s%s", self.op.event, self.instance, reply.outcome,
                     f" ({reply.detail})" if reply.detail else "")
            self._audit(audit.NOTICE, reply, f"abort sent: {why}", took)
            self.record.closing_sent(protocol.ABORT, claim, reply, why, self.host)

        # A prepare went out only under this negotiation's lock (run), which is given back
        # once this has run, in the background.
        self._closing = send

    def _audit(self, kind: str, reply: replies.Reply, why: str, took: float,
               **extra) -> None:
        if self.link.failed:
            LOG.info("audit event not written (Redis failed this negotiation): %s %s %s: %s",
                     kind, self.op.event, self.instance, why)
            return
        try:
            redis_schema.audit(self.link.client, kind, self.instance, event=self.op.event,
                               action=self.op.action, request=reply.id, outcome=reply.outcome,
                               voters=reply.voters, why=why, took_ms=round(took * 1000),
                               **extra)
        except redis.RedisError as exc:
            self.link.failed = True
            LOG.warning("audit event lost (%s): %s %s %s", exc, kind, self.op.event,
                        self.instance)
