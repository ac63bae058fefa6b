"""The negotiation filter: asks the guest before Nova acts on a lifecycle operation.

For a negotiated operation on a server whose flavor has
``guest:negotiation=true``: vote (any NACK answers the caller with HTTP 409 in
Nova's error envelope, marked ``action-rejected``, and Nova never sees the
request), then the irrevocable prepare notice, then the request goes on to
Nova; if Nova refuses it, the guest is told to abort. Everything else passes
through untouched.

    [filter:negotiation]
    paste.filter_factory = novaproxy.api.negotiation:filter_factory
    redis_url = redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid

import redis
import webob
import webob.dec

from guestd import protocol
from novaproxy import operations, redis_schema
from novaproxy.api import _nova, policy
from novaproxy.api._guest import GuestChannel
from novaproxy.api._request import SKIP_ENVIRON, SKIP_HEADER, NegotiationRequest
from novaproxy.api.classify import Operation

LOG = logging.getLogger(__name__)
REJECTED = "action-rejected"
IN_PROGRESS = "negotiation-in-progress"
RESULT_HEADER = "OpenStack-Novaproxy-Result"
# How long a negotiation may hold an instance beyond its vote and prepare
# deadlines: Nova's answer to the forwarded request.
FORWARD_ALLOWANCE = 120.0


def conflict(message: str, marker: str) -> webob.Response:
    """HTTP 409 in Nova's error envelope, with the marker in message and header."""
    resp = webob.Response(status=409, charset="UTF-8", content_type="application/json")
    resp.json_body = {"conflictingRequest": {"code": 409, "message": f"{marker}: {message}"}}
    resp.headers[RESULT_HEADER] = marker
    return resp


class NegotiationFilter:
    def __init__(self, app, pol: policy.Policy, channel: GuestChannel) -> None:
        self.app = app
        self.policy = pol
        self.channel = channel

    def __call__(self, environ: dict, start_response):
        # Only POST and DELETE can be lifecycle operations: everything else
        # goes straight on, without even a request object (pass-through cost).
        if environ.get("REQUEST_METHOD") not in ("POST", "DELETE"):
            environ.pop(SKIP_ENVIRON, None)  # our switch never reaches Nova
            return self.app(environ, start_response)
        return self._maybe_negotiate(environ, start_response)

    @webob.dec.wsgify(RequestClass=NegotiationRequest)
    def _maybe_negotiate(self, req: NegotiationRequest):
        skip = req.environ.pop(SKIP_ENVIRON, "").strip().lower() in policy.TRUE
        op = req.operation()
        if op is None or self.policy.mode(op.event) == policy.OFF:
            return req.get_response(self.app)
        server = _nova.show_server(req, self.app, op.instance)
        if server is None:
            return req.get_response(self.app)
        if not policy.negotiates(server):
            resp = req.get_response(self.app)
            if policy.monitored(server) and resp.status_int < 400:
                self._record(op, server.get("id", op.instance), prepared=False, notify=False)
            return resp
        if skip and self._admin_skip(req, op, server.get("id", op.instance)):
            return req.get_response(self.app)
        return self._negotiate(req, op, server)

    def _admin_skip(self, req: NegotiationRequest, op: Operation, instance: str) -> bool:
        """Honour the skip switch for a validated admin only; from anyone else it is dropped."""
        admin, who = req.validated_identity()
        if not admin:
            LOG.warning("%s header from %s ignored for %s of %s: admins only; negotiating",
                        SKIP_HEADER, who, op.event, instance)
            return False
        LOG.info("%s of %s: negotiation skipped by %s (%s)", op.event, instance, who, SKIP_HEADER)
        try:
            redis_schema.audit(self.channel.redis, "skip", instance, event=op.event,
                               action=op.action, outcome="skipped", why=f"admin skip by {who}")
        except redis.RedisError as exc:
            LOG.warning("audit event lost (%s): skip %s %s", exc, op.event, instance)
        return True

    def _negotiate(self, req: NegotiationRequest, op: Operation, server: dict):
        instance = server.get("id", op.instance)
        specs = (server.get("flavor") or {}).get("extra_specs") or {}
        vote_timeout = self.policy.vote_timeout_for(specs)
        owner = uuid.uuid4().hex
        try:
            host = redis_schema.route_of(self.channel.redis, instance)
            locked = redis_schema.acquire_lock(
                self.channel.redis, instance, owner,
                vote_timeout + self.policy.prepare_timeout + FORWARD_ALLOWANCE)
        except redis.RedisError as exc:
            refusal = self._cannot_ask(op, instance, f"Redis unavailable: {exc}")
            return refusal or req.get_response(self.app)
        if not locked:
            LOG.info("%s of %s refused: another negotiation is in progress", op.event, instance)
            return conflict(f"another operation on server {instance} is being negotiated "
                            "with its guest; retry later", IN_PROGRESS)
        try:
            return self._phases(req, op, server, instance, host, vote_timeout)
        finally:
            try:
                redis_schema.release_lock(self.channel.redis, instance, owner)
            except redis.RedisError as exc:
                LOG.warning("could not release the negotiation lock of %s: %s", instance, exc)

    def _phases(self, req, op: Operation, server: dict, instance: str, host: str | None,
                vote_timeout: float):
        """vote → prepare → Nova → abort now, or end later (through the operation record)."""
        lifecycle = operations.LIFECYCLES[op.event]
        prepared = False
        if lifecycle.negotiable:
            if host is None:
                refusal = self._cannot_ask(op, instance, "no agent serves this instance")
                if refusal is not None:
                    return refusal
            else:
                op = self._detailed(req, op, server)
                if self.policy.mode(op.event) == policy.VOTE:
                    refusal = self._vote(op, instance, host, vote_timeout)
                    if refusal is not None:
                        return refusal
                reply, took = self._ask(host, op, instance, protocol.PREPARE,
                                        self.policy.prepare_timeout)
                self._audit("notice", op, instance, reply, "prepare sent", took)
                prepared = True
        try:
            resp = req.get_response(self.app)
        except Exception:
            if prepared:
                self._abort(host, op, instance, "the request could not be forwarded")
            raise
        if resp.status_int >= 400:
            if prepared:
                self._abort(host, op, instance, f"Nova answered HTTP {resp.status_int}")
        else:
            self._record(op, instance, prepared)
        return resp

    def _vote(self, op: Operation, instance: str, host: str, timeout: float):
        """None to go ahead, or the 409 that carries the guest's reasons."""
        reply, took = self._ask(host, op, instance, protocol.VOTE, timeout)
        decision = policy.decide(self.policy, reply)
        self._audit("negotiation", op, instance, reply, decision.why, took,
                    proceed=decision.proceed)
        if decision.proceed:
            LOG.info("%s of %s accepted in %.0f ms: %s", op.event, instance, took * 1000,
                     decision.why)
            return None
        LOG.info("%s of %s rejected in %.0f ms: %s: %s", op.event, instance, took * 1000,
                 decision.why, "; ".join(decision.reasons))
        return conflict(f"{op.event} of server {instance} was rejected by its guest: "
                        + "; ".join(decision.reasons), REJECTED)

    def _detailed(self, req, op: Operation, server: dict) -> Operation:
        """What the guest should know beyond the request: e.g. a resize's new size."""
        if op.event != "resize" or "flavorRef" not in op.details:
            return op
        current = server.get("flavor") or {}
        details = {**op.details, "from": {k: current.get(k) for k in ("vcpus", "ram", "disk")}}
        flavor = _nova.show_flavor(req, self.app, str(op.details["flavorRef"]))
        if flavor is not None:
            details["flavor"] = {k: flavor.get(k) for k in ("id", "name", "vcpus", "ram", "disk")}
        return dataclasses.replace(op, details=details)

    def _record(self, op: Operation, instance: str, prepared: bool, notify: bool = True) -> None:
        """Nova took it: the agent hosting the VM sends the end (or abort) when it is over,
        and its monitor knows the silence meanwhile is intended (``notify``: the guest
        hears of it; not where only monitoring is on)."""
        now = time.time()
        record = {"id": uuid.uuid4().hex, "event": op.event, "action": op.action,
                  "details": op.details, "prepared": prepared, "notify": notify, "created": now,
                  "expires": now + self.policy.operation_timeout,
                  "end_timeout": self.policy.end_timeout}
        try:
            redis_schema.record_operation(self.channel.redis, instance, record,
                                          self.policy.operation_timeout)
        except redis.RedisError as exc:
            LOG.warning("%s of %s: could not record the operation (%s); the guest will get "
                        "no end notice", op.event, instance, exc)

    def _ask(self, host: str, op: Operation, instance: str, phase: str,
             timeout: float) -> tuple:
        """The guest's reply, and the seconds it took (the round trip operators see)."""
        request = protocol.request(uuid.uuid4().hex, instance, op.event, phase, timeout,
                                   op.details, self.policy.silence)
        started = time.monotonic()
        try:
            reply = self.channel.ask(host, request)
        except redis.RedisError as exc:
            reply = redis_schema.Reply(request["id"], instance, redis_schema.UNREACHABLE,
                                       detail=f"Redis unavailable: {exc}", host=host)
        return reply, time.monotonic() - started

    def _abort(self, host: str, op: Operation, instance: str, why: str) -> None:
        """Tell the prepared guest the operation is off, without delaying the caller."""
        LOG.info("%s of %s did not happen (%s): sending abort", op.event, instance, why)

        def send() -> None:
            reply, took = self._ask(host, op, instance, protocol.ABORT,
                                    self.policy.prepare_timeout)
            self._audit("notice", op, instance, reply, f"abort sent: {why}", took)

        threading.Thread(target=send, name=f"abort-{instance}", daemon=True).start()

    def _cannot_ask(self, op: Operation, instance: str, why: str):
        """None to go ahead without the guest (unreachable = accept), else the 409."""
        proceed = self.policy.unreachable == protocol.ACCEPT
        LOG.warning("%s of %s: %s; %s", op.event, instance, why,
                    "proceeding (unreachable = accept)" if proceed else "rejecting")
        if proceed:
            return None
        return conflict(f"{op.event} of server {instance} needs its guest's consent, "
                        f"which cannot be asked: {why}", REJECTED)

    def _audit(self, kind: str, op: Operation, instance: str, reply: redis_schema.Reply,
               why: str, took: float, **extra) -> None:
        try:
            redis_schema.audit(self.channel.redis, kind, instance, event=op.event,
                               action=op.action, request=reply.id, outcome=reply.outcome,
                               voters=reply.voters, why=why, took_ms=round(took * 1000),
                               **extra)
        except redis.RedisError as exc:
            LOG.warning("audit event lost (%s): %s %s %s", exc, kind, op.event, instance)


def filter_factory(global_conf: dict, **local_conf):
    """Paste entry point; the policy is validated here, before any request."""
    conf = {**global_conf, **local_conf}
    try:
        pol = policy.from_conf(conf)
    except policy.PolicyError as exc:
        raise ValueError(f"[filter:negotiation] {exc}") from None
    channel = GuestChannel(pol.redis_url, pol.redis_max_connections)
    try:
        channel.redis.ping()
    except redis.RedisError as exc:
        LOG.warning("Redis at %s is not reachable yet (%s); negotiations will follow "
                    "unreachable = %s until it is", redis_schema.redact(pol.redis_url), exc,
                    pol.unreachable)

    def make(app):
        return NegotiationFilter(app, pol, channel)

    return make
