"""The proxy's own server action, ``novaproxy-scale``: guest-level vCPU scaling.

::

    POST /servers/{id}/action  {"novaproxy-scale": {"online": 2}}
    POST /servers/{id}/action  {"novaproxy-scale": {"step": "down"}}   # or "up"

It is answered here and never forwarded (without this filter Nova answers 400
to the unknown action). The decisions are :mod:`novaproxy.scaling`'s; the
vCPUs are read and changed by the agent hosting the server, through its guest
agent (:mod:`novaproxy.agent.scale`). The caller's answers:

- 200 ``{"novaproxy-scale": {"online": [...], "offline": [...], "plugged": N,
  "operation": ID}}``: the guest's own view after the change;
- 400 ``badRequest``: a malformed body, scaling not enabled on the flavor, a
  target out of the flavor's range or equal to what is online: the message says
  what to fix;
- 403 ``forbidden``: Nova shows the caller no flavor extra specs, so whether
  scaling is enabled cannot be told;
- 404 ``itemNotFound``: Nova has no such server for the caller (its look-up is
  the caller's own, as for any negotiated operation);
- 409 ``conflictingRequest``: the server is not ``ACTIVE``; another operation is
  being negotiated (``negotiation-in-progress``); the guest's applications said
  no (``action-rejected``); the guest could not make the change
  (``scale-failed``, with the guest's error; the guest is told abort);
- 503 ``serviceUnavailable``: the guest's vCPUs cannot be read or changed now
  (no agent serves the server, its guest agent does not answer, Redis is down);
  when the agent did not answer an apply, whether the change happened is decided
  by the agent from the guest's own view, and the guest is told end or abort.

A scale-down is voted on and prepared like any negotiated operation
(:class:`~novaproxy.api.phases.Negotiation`: one per server under its lock, its
record written before the prepare); applications may name the vCPUs to give up
in their prepare answers. The apply takes the place of Nova, and the end notice,
with the new online set, is sent by this process once the caller has its answer
(or by the agent, from the record, if this process cannot). Where the flavor
does not negotiate, or the policy mode of the event is ``off``, the change is
made without notices.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import redis
import webob

from guestd import protocol
from novaproxy import audit, operations, peers, replies, scaling
from novaproxy.api import _nova, policy
from novaproxy.api._guest import GuestChannel
from novaproxy.api._request import NegotiationRequest
from novaproxy.api.classify import Operation
from novaproxy.api.phases import Negotiation
from novaproxy.api.responses import (
    IN_PROGRESS,
    SCALE_FAILED,
    bad_request,
    conflict,
    forbidden,
    not_found,
    nova_conflict,
    unavailable,
)

LOG = logging.getLogger(__name__)


class ScaleAction:
    """Answers ``novaproxy-scale`` actions; ``app`` is Nova (look-ups only)."""

    def __init__(self, app, pol: policy.Policy, channel: GuestChannel) -> None:
        self.app = app
        self.policy = pol
        self.channel = channel

    def __call__(self, req: NegotiationRequest, op: Operation) -> webob.Response:
        try:
            request = scaling.parse_action(op.details.get("body"))
        except scaling.ScaleError as exc:
            return bad_request(f"Invalid input for {scaling.ACTION}: {exc}")
        req.route_as_classified()
        try:
            server = _nova.show_server(req, self.app, op.instance)
        except _nova.LookupFailed as exc:
            return unavailable(f"vCPUs of server {op.instance} not scaled: {exc}")
        if server is None:
            return not_found(f"Instance {op.instance} could not be found.")
        instance = server.get("id", op.instance)
        if not policy.settings_known(server):
            return forbidden(f"vCPUs of server {instance} not scaled: whether its flavor "
                             "allows it is unknown, as Nova shows you no flavor extra specs "
                             "(policy os_compute_api:servers:show:flavor-extra-specs)")
        shown = server["flavor"]
        try:
            rules = scaling.policy(shown["extra_specs"], int(shown.get("vcpus") or 0))
            scaling.require_enabled(rules)
        except scaling.ScaleError as exc:
            return bad_request(str(exc))
        if server.get("status") != "ACTIVE":
            return nova_conflict(f"Cannot '{scaling.ACTION}' instance {instance} while it "
                                 f"is in vm_state {server.get('OS-EXT-STS:vm_state', '?')}")
        return ScaleNegotiation(self.app, self.policy, self.channel, req, op, server, request,
                                rules).run()


class ScaleNegotiation(Negotiation):
    """A :class:`Negotiation` whose operation the agent carries out in the guest."""

    def __init__(self, app, pol: policy.Policy, channel: GuestChannel, req: NegotiationRequest,
                 op: Operation, server: dict, request: scaling.Request,
                 rules: scaling.Policy) -> None:
        super().__init__(app, pol, channel, req, op, server)
        self.request = request
        self.rules = rules
        self.plan: scaling.Plan | None = None

    def _cannot_ask(self, why: str) -> webob.Response:
        """No way to the guest: nothing to decide, as nothing can be changed."""
        LOG.warning("%s of %s: %s", self.op.event, self.instance, why)
        return unavailable(f"vCPUs of server {self.instance} not scaled: {why}")

    def _phases(self, vote_timeout: float) -> webob.Response:
        if self.host is None:
            return self._cannot_ask("no agent serves this instance")
        earlier = self.record.earlier_undecided()
        if earlier:  # its closing comes first, as in Negotiation._phases
            LOG.info("%s of %s refused: %s", scaling.ACTION, self.instance, earlier)
            return conflict(f"{earlier}; retry later", IN_PROGRESS)
        reply = self._agent(self._request(scaling.VCPUS, scaling.READ, scaling.READ_TIMEOUT,
                                          {}))
        if reply.outcome != protocol.ACCEPT:
            return self._cannot_ask(f"its vCPUs cannot be read: {reply.outcome}"
                                    + (f" ({reply.detail})" if reply.detail else ""))
        try:
            self.plan = scaling.plan(self.request, *_view(reply), self.rules)
        except scaling.ScaleError as exc:
            LOG.info("%s of %s refused: %s", scaling.ACTION, self.instance, exc)
            return bad_request(str(exc))
        self.record.op = dataclasses.replace(self.op, event=self.plan.event,
                                             details=self.plan.details())
        LOG.info("%s of %s: %d of %d vCPUs online (%s), %d wanted", self.op.event,
                 self.instance, len(self.plan.online), len(self.plan.plugged),
                 scaling.cpu_list(self.plan.online), self.plan.target)
        if not policy.negotiates(self.server) or self.policy.mode(self.op.event) == policy.OFF:
            return self.forward(prepared=False)
        return self._negotiate(vote_timeout)

    def forward(self, prepared: bool) -> webob.Response:
        """In place of Nova: the agent applies the change (the vCPUs the applications
        named in their prepare answers first); then the end, or the abort."""
        named = scaling.named(self.prepared.voters) if self.prepared is not None else ()
        change = self.plan.change(named)
        details = {"change": sorted(change), "owner": self.lease.owner}
        if prepared:
            details[operations.OPERATION_DETAIL] = self.record.id
        reply = self._agent(self._request(self.op.event, scaling.APPLY, scaling.APPLY_TIMEOUT,
                                          details))
        what = f"{self.op.event} of server {self.instance}"
        if reply.outcome == protocol.ACCEPT:
            online, plugged = _view(reply)
            if prepared:
                self._end(change, online, reply.detail)
            LOG.info("%s: %s", what, reply.detail)
            resp = webob.Response(status=200, charset="UTF-8", content_type="application/json")
            resp.json_body = {scaling.ACTION: {
                "online": sorted(online), "offline": sorted(plugged - online),
                "plugged": len(plugged), "operation": self.record.id if prepared else None}}
            return resp
        if reply.outcome == protocol.REJECT:  # the agent or the guest would not, or failed
            if prepared:
                self.abort(reply.detail)
            return conflict(f"{what} failed: {reply.detail}", SCALE_FAILED)
        why = f"its agent gave no answer ({reply.outcome}: {reply.detail})"
        if prepared:  # the agent may have applied it: the guest's own view decides
            self.record.settle(operations.UNKNOWN, why)
            return unavailable(f"{what}: whether it happened is not known: {why}; its agent "
                               "decides from the guest's own view and tells the guest end or "
                               "abort")
        return unavailable(f"{what} not done: {why}")

    def _end(self, change: frozenset, online: frozenset, why: str) -> None:
        """The end notice, with the new online set: sent once the caller has its answer,
        before the server is given back, as an abort is (:meth:`Negotiation.abort`)."""
        record = {"event": self.op.event, "details": self.op.details,
                  "change": sorted(change), "after": sorted(online)}
        self.record.op = dataclasses.replace(
            self.op, details=scaling.closing_details(record, end=True))
        self.channel.peers.notify(self.instance, peers.operation_state(
            self.op.event, peers.ENDED), why)

        def send() -> None:
            claim = self.record.claim_closing(protocol.END, self.policy.end_timeout)
            if not claim:
                return  # an agent is closing it already, or Redis left it to the agent
            reply, took = self._ask(protocol.END, self.policy.end_timeout, background=True,
                                    rid=operations.closing_id(self.record.id))
            LOG.info("end of %s of %s: %s%s", self.op.event, self.instance, reply.outcome,
                     f" ({reply.detail})" if reply.detail else "")
            self._audit(audit.NOTICE, reply, f"end sent: {why}", took)
            self.record.closing_sent(protocol.END, claim, reply, why, self.host)

        self._closing = send

    def _request(self, event: str, phase: str, timeout: float, details: dict) -> dict:
        return protocol.request(uuid.uuid4().hex, self.instance, event, phase, timeout, details)

    def _agent(self, request: dict) -> replies.Reply:
        """The agent's own answer to ``request`` (never guestd's)."""
        if self.link.failed:
            return replies.Reply(request["id"], self.instance, replies.UNREACHABLE,
                                 detail="Redis failed earlier in this negotiation")
        try:
            return self.channel.ask(self.host, request)
        except redis.RedisError as exc:
            self.link.failed = True
            return replies.Reply(request["id"], self.instance, replies.UNREACHABLE,
                                 detail=f"Redis unavailable: {exc}")


def _view(reply: replies.Reply) -> tuple:
    """The guest's vCPUs in the agent's reply: (online, plugged)."""
    return tuple(scaling.cpu_set(reply.data.get(key)) or frozenset()
                 for key in ("online", "plugged"))
