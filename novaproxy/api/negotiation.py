"""The negotiation filter: asks the guest before Nova acts on a lifecycle operation.

For a negotiated operation on a server whose flavor has
``guest:negotiation=true``: vote (any NACK answers the caller with HTTP 409 in
Nova's error envelope, marked ``action-rejected``, and Nova never sees the
request), then the irrevocable prepare notice, then the request goes on to
Nova; if Nova refuses it, the guest is told to abort. Everything else passes
through untouched.

Every prepare is closed exactly once (end or abort): the operation is recorded
(:mod:`novaproxy.operations`) before the prepare goes out, and moved to
``forwarding`` only while this negotiation still holds the server's lock, so a
proxy that dies leaves a record the agent closes from Nova's evidence. Nova's
refusal (4xx) is certain: the proxy sends that abort itself, before it gives
the server back, so a next operation's notices follow it. Any other failure
(5xx, no answer) leaves the outcome ``unknown`` for the agent to decide.

What the filter guarantees, and how:

- The request is classified on the path Nova's router will see (decoded and
  normalised as Nova does, :mod:`novaproxy.api.paths`), and a lifecycle request
  is forwarded under exactly that path, so no spelling reaches Nova unasked.
- Whether the server is negotiated is read from Nova as the caller, on the v2.1
  API whatever prefix the caller used. If that cannot be established (Nova
  failed the look-up, the extra specs are hidden), the ``unreachable`` policy
  decides, and the log says so.
- Redis trouble is ``unreachable``, never the guest's silence, and every Redis
  command is bounded by ``redis_timeout``; once Redis failed, the negotiation
  makes no further Redis call that could delay the caller.
- A prepare that could not be delivered follows ``unreachable``; one the guest's
  applications did not confirm in time follows ``silence``; when either stops
  the operation, the guest is told to abort.
- A request Nova is certain to refuse before acting (the caller's authorisation
  for that action, the body's schema at its microversion, the server's state:
  :mod:`novaproxy.api.precheck`) goes to Nova unasked, so the guest never
  prepares for it and the caller gets Nova's own error.
- The agent's recovery actions, and an admin's explicit skip, pass through
  unasked — for a validated identity only (:mod:`novaproxy.headers`).

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
from novaproxy import audit, headers, operations, redis_schema, replies
from novaproxy.api import _nova, classify, policy, precheck
from novaproxy.api._guest import REDIS_LOST, GuestChannel
from novaproxy.api._request import NegotiationRequest
from novaproxy.api.classify import Operation
from novaproxy.flavor import TRUE_WORDS

LOG = logging.getLogger(__name__)
REJECTED = "action-rejected"
IN_PROGRESS = "negotiation-in-progress"
RESULT_HEADER = "OpenStack-Novaproxy-Result"
# A negotiation holds its server with a lease of this many seconds, renewed every
# third of it while the negotiation runs: a proxy that dies frees the server within
# one lease, instead of after the whole negotiation's longest possible time.
LOCK_LEASE = 10.0
# A lock whose release failed (Redis down) is retried in the background this long.
RELEASE_RETRY = 30.0


def conflict(message: str, marker: str) -> webob.Response:
    """HTTP 409 in Nova's error envelope, with the marker in message and header."""
    resp = webob.Response(status=409, charset="UTF-8", content_type="application/json")
    resp.json_body = {"conflictingRequest": {"code": 409, "message": f"{marker}: {message}"}}
    resp.headers[RESULT_HEADER] = marker
    return resp


def cannot_ask(pol: policy.Policy, op: Operation, instance: str, why: str):
    """None to go ahead without the guest (unreachable = accept), else the 409."""
    proceed = pol.unreachable == protocol.ACCEPT
    LOG.warning("%s of %s: %s; %s", op.event, instance, why,
                "proceeding (unreachable = accept)" if proceed else
                "rejecting (unreachable = reject)")
    if proceed:
        return None
    return conflict(f"{op.event} of server {instance} needs its guest's consent, "
                    f"which cannot be asked: {why}", REJECTED)


def unavailable(message: str) -> webob.Response:
    """HTTP 503 in Nova's error envelope."""
    resp = webob.Response(status=503, charset="UTF-8", content_type="application/json")
    resp.json_body = {"serviceUnavailable": {"code": 503, "message": message}}
    return resp


def too_large(message: str) -> webob.Response:
    """HTTP 413 in Nova's error envelope (Nova's own answer to an oversized body)."""
    resp = webob.Response(status=413, charset="UTF-8", content_type="application/json")
    resp.json_body = {"overLimit": {"code": 413, "message": message}}
    return resp


class NegotiationFilter:
    def __init__(self, app, pol: policy.Policy, channel: GuestChannel,
                 check: precheck.Precheck) -> None:
        self.app = app
        self.policy = pol
        self.channel = channel
        self.precheck = check

    def __call__(self, environ: dict, start_response):
        # Only POST and DELETE can be lifecycle operations: everything else
        # goes straight on, without even a request object (pass-through cost).
        if environ.get("REQUEST_METHOD") not in ("POST", "DELETE"):
            environ.pop(headers.SKIP_ENVIRON, None)  # our switch never reaches Nova
            return self.app(environ, start_response)
        return self._maybe_negotiate(environ, start_response)

    @webob.dec.wsgify(RequestClass=NegotiationRequest)
    def _maybe_negotiate(self, req: NegotiationRequest):
        skip = req.environ.pop(headers.SKIP_ENVIRON, "").strip().lower()
        try:
            op = req.operation()
        except classify.BodyTooLarge as exc:
            LOG.info("%s %s refused: %s", req.method, req.routed_path(), exc)
            return too_large(str(exc))
        if op is None or self.policy.mode(op.event) == policy.OFF:
            return req.get_response(self.app)
        req.route_as_classified()
        try:
            server = _nova.show_server(req, self.app, op.instance)
        except _nova.LookupFailed as exc:
            why = f"whether it is negotiated is unknown: {exc}"
            return cannot_ask(self.policy, op, op.instance, why) or req.get_response(self.app)
        if server is None:  # Nova has no such server for the caller: its own 404
            return req.get_response(self.app)
        instance = server.get("id", op.instance)
        if not policy.settings_known(server):
            why = ("whether it is negotiated is unknown: Nova shows the caller no flavor "
                   "extra specs (policy os_compute_api:servers:show:flavor-extra-specs)")
            return cannot_ask(self.policy, op, instance, why) or req.get_response(self.app)
        if not policy.negotiates(server):
            resp = req.get_response(self.app)
            if policy.monitored(server) and resp.status_int < 400:
                Negotiation(self, req, op, server).record(resp, notify=False)
            return resp
        if skip and self._skip_allowed(req, op, instance, skip):
            return req.get_response(self.app)
        try:
            refusal = self.precheck.refusal(op, server, req)
        except Exception:  # a precheck bug must neither fail the request nor skip the guest
            LOG.exception("%s of %s: the precheck failed; negotiating", op.event, instance)
            refusal = None
        if refusal is not None:  # Nova answers it with its own error; the guest hears nothing
            LOG.info("%s of %s not negotiated: Nova would refuse it (%s)", op.event, instance,
                     refusal)
            resp = req.get_response(self.app)
            if resp.status_int < 400:  # the proxy's view of Nova is off: say so, loudly
                LOG.error("%s of %s: Nova accepted what the precheck said it would refuse "
                          "(%s); the guest was not asked", op.event, instance, refusal)
                Negotiation(self, req, op, server).record(resp)
            return resp
        return Negotiation(self, req, op, server).run()

    def _skip_allowed(self, req: NegotiationRequest, op: Operation, instance: str,
                      value: str) -> bool:
        """Honour the skip switch for a validated identity with the right role only."""
        recovery = value == headers.RECOVERY
        if not recovery and value not in TRUE_WORDS:
            LOG.warning("%s: %r is not a value it takes; negotiating %s of %s",
                        headers.SKIP_HEADER, value, op.event, instance)
            return False
        allowed = headers.RECOVERY_ROLES if recovery else headers.ADMIN_ROLES
        roles, who = req.validated_identity()
        if not roles & allowed:
            LOG.warning("%s: %s from %s ignored for %s of %s: needs a validated role of %s; "
                        "negotiating", headers.SKIP_HEADER, value, who, op.event, instance,
                        "/".join(sorted(allowed)))
            return False
        why = f"{'recovery' if recovery else 'admin skip'} by {who}"
        LOG.info("%s of %s: not negotiated (%s)", op.event, instance, why)
        try:
            redis_schema.audit(self.channel.redis, audit.SKIP, instance, event=op.event,
                               action=op.action, outcome="skipped", why=why)
        except redis.RedisError as exc:
            LOG.warning("audit event lost (%s): skip %s %s", exc, op.event, instance)
        return True

class Negotiation:
    """One lifecycle request's way through the phases, for one server.

    Holds what every phase needs (the operation, the canonical instance id, its
    host) and whether Redis has failed it: after a Redis failure no further
    Redis call is made that could hold the caller, only background ones.
    """

    def __init__(self, flt: NegotiationFilter, req: NegotiationRequest, op: Operation,
                 server: dict) -> None:
        self.app = flt.app
        self.policy = flt.policy
        self.channel = flt.channel
        self.req = req
        self.op = op
        self.server = server
        self.instance = server.get("id", op.instance)
        self.host: str | None = None
        self.redis_failed = False
        self.op_id = uuid.uuid4().hex  # the operation's id, in its record and notices
        self.owner = ""  # the negotiation lock's token, once held
        self.recorded = False  # the record of intent is written: a prepare may go out
        self._closing = None  # the abort to send before the server is given back

    @property
    def redis(self) -> redis.Redis:
        return self.channel.redis

    def run(self):
        specs = (self.server.get("flavor") or {}).get("extra_specs") or {}
        vote_timeout = self.policy.vote_timeout_for(specs)
        owner = uuid.uuid4().hex
        try:
            self.host = redis_schema.route_of(self.redis, self.instance)
            locked = redis_schema.acquire_lock(self.redis, self.instance, owner, LOCK_LEASE)
        except redis.RedisError as exc:
            self.redis_failed = True
            refusal = cannot_ask(self.policy, self.op, self.instance, f"Redis unavailable: {exc}")
            return refusal or self.forward(prepared=False)
        if not locked:
            LOG.info("%s of %s refused: another negotiation is in progress", self.op.event,
                     self.instance)
            return conflict(f"another operation on server {self.instance} is being "
                            "negotiated with its guest; retry later", IN_PROGRESS)
        self.owner = owner
        done = threading.Event()
        threading.Thread(target=self._renew, args=(owner, done), daemon=True,
                         name=f"lease-{self.instance}").start()

        def give_back() -> None:
            done.set()
            self._release(owner)

        try:
            return self._phases(vote_timeout)
        finally:
            closing, self._closing = self._closing, None
            if closing is None:
                give_back()
            else:  # the abort first, then the server: a next operation's notices follow it
                threading.Thread(target=lambda: (closing(), give_back()), daemon=True,
                                 name=f"abort-{self.instance}").start()

    def _earlier_undecided(self) -> str:
        """Why an earlier operation of the server must be closed before this one is put to
        the guest ("" if none): its notices come first, and whether Nova acted on it is
        not known yet (its proxy stopped, or Nova's answer was lost). Bounded by the
        record's ``decide_by``, by which the agent has decided it."""
        try:
            ops = redis_schema.operations_of(self.redis, [self.instance]).get(self.instance, [])
        except redis.RedisError as exc:
            self.redis_failed = True
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

    def _renew(self, owner: str, done: threading.Event) -> None:
        """Keep the server's lease until the negotiation is done (a failure is logged,
        and the lease then runs out by itself)."""
        while not done.wait(LOCK_LEASE / 3):
            try:
                if not redis_schema.renew_lock(self.redis, self.instance, owner, LOCK_LEASE):
                    LOG.warning("%s of %s: the negotiation lock was lost (expired while "
                                "Redis was unreachable?)", self.op.event, self.instance)
                    return
            except redis.RedisError as exc:
                LOG.warning("%s of %s: could not renew the negotiation lock: %s",
                            self.op.event, self.instance, exc)

    def _phases(self, vote_timeout: float):
        """vote → prepare → Nova → abort now, or end later (through the operation record)."""
        if not operations.LIFECYCLES[self.op.event].negotiable:
            return self.forward(prepared=False)
        if self.host is None:
            refusal = cannot_ask(self.policy, self.op, self.instance,
                                 "no agent serves this instance")
            return refusal or self.forward(prepared=False)
        earlier = self._earlier_undecided()
        if earlier:  # its closing comes first: the guest hears of this one after it
            LOG.info("%s of %s refused: %s", self.op.event, self.instance, earlier)
            return conflict(f"{earlier}; retry later", IN_PROGRESS)
        self.op = self._detailed()
        if self.policy.mode(self.op.event) == policy.VOTE:
            refusal = self._vote(vote_timeout)
            if refusal is not None:
                return refusal
        self._record_intent()
        reply, took = self._ask(protocol.PREPARE, self.policy.prepare_timeout)
        decision = policy.decide_prepare(self.policy, reply)
        self._audit(audit.NOTICE, reply, f"prepare sent: {decision.why}", took,
                    proceed=decision.proceed)
        if not decision.proceed:
            LOG.info("%s of %s stopped after the prepare: %s", self.op.event, self.instance,
                     decision.why)
            self.abort(decision.why)
            return conflict(f"{self.op.event} of server {self.instance} was stopped: "
                            + "; ".join(decision.reasons), REJECTED)
        if not self.recorded:  # Redis failed before the prepare: none went out
            return self.forward(prepared=False)
        why = self._mark_forwarding()
        if why:
            LOG.warning("%s of %s not forwarded: %s", self.op.event, self.instance, why)
            self.abort(why)
            return unavailable(f"{self.op.event} of server {self.instance} was not sent to "
                               f"Nova: {why}; its guest is told to abort; retry later")
        return self.forward(prepared=True)

    def _vote(self, timeout: float):
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

    def forward(self, prepared: bool):
        """Nova's answer to the request. For a prepared guest: an acceptance is recorded
        for the agent to end, a refusal aborted now, anything else left to Nova's
        evidence (``unknown``): Nova may have acted on a request it failed to answer."""
        try:
            resp = self.req.get_response(self.app)
        except Exception as exc:
            if prepared:
                self._settle(operations.UNKNOWN, f"the request could not be forwarded: {exc}")
            raise
        status = resp.status_int
        if not prepared:
            if status < 400:
                self.record(resp)
        elif status < 400:
            self._settle(operations.FORWARDED, f"Nova answered HTTP {status}",
                         nova_request=self._nova_request(resp))
        elif status < 500:
            self.abort(f"Nova answered HTTP {status}")
        else:
            self._settle(operations.UNKNOWN, f"Nova answered HTTP {status}")
        return resp

    def _nova_request(self, resp: webob.Response) -> str:
        """Nova's id of the request (its instance action carries it)."""
        return (resp.headers.get("x-openstack-request-id")
                or resp.headers.get("x-compute-request-id")
                or self.req.environ.get("openstack.request_id") or "")

    def _record_intent(self) -> None:
        """Record the operation before the prepare goes out: whatever happens next (this
        process dies, Nova fails), the agent closes it from this record."""
        now = time.time()
        record = self._record(prepared=True, notify=True, now=now)
        record.update(state=operations.PREPARING, owner=self.owner, host=self.host,
                      decide_by=now + self.policy.prepare_timeout + self.policy.outcome_wait)
        try:
            redis_schema.record_operation(self.redis, self.instance, record,
                                          self.policy.operation_timeout, host=self.host)
        except redis.RedisError as exc:
            self.redis_failed = True
            LOG.warning("%s of %s: could not record the operation (%s); no prepare is sent",
                        self.op.event, self.instance, exc)
            return
        self.recorded = True

    def _mark_forwarding(self) -> str:
        """Move the record to ``forwarding`` while the lock is still this negotiation's;
        why not, if it could not be (then the request must not go to Nova)."""
        now = time.time()
        try:
            moved = redis_schema.update_operation(
                self.redis, self.instance, self.op_id, [operations.PREPARING],
                {"state": operations.FORWARDING, "forwarded_at": now,
                 "decide_by": now + self.policy.outcome_wait}, holding=self.owner)
        except redis.RedisError as exc:
            self.redis_failed = True
            return f"the operation could not be marked as sent to Nova (Redis: {exc})"
        return "" if moved else "the negotiation lost its hold on the server"

    def _settle(self, state: str, why: str, **changes) -> None:
        """What became of the forwarded request, for the agent that closes the record."""
        changes.update(state=state, why=why)
        if state == operations.UNKNOWN:
            changes["decide_by"] = time.time() + self.policy.outcome_wait
            LOG.warning("%s of %s: %s; whether Nova acted is left to its instance actions "
                        "(the agent decides within %.0fs)", self.op.event, self.instance, why,
                        self.policy.outcome_wait)
        try:
            redis_schema.update_operation(self.redis, self.instance, self.op_id,
                                          [operations.FORWARDING], changes)
        except redis.RedisError as exc:
            self.redis_failed = True
            LOG.warning("%s of %s: could not note that %s (%s); the agent finds Nova's "
                        "action by itself", self.op.event, self.instance, why, exc)

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

    def _record(self, prepared: bool, notify: bool, now: float) -> dict:
        return {"id": self.op_id, "event": self.op.event, "action": self.op.action,
                "details": self.op.details, "prepared": prepared, "notify": notify,
                "created": now, "expires": now + self.policy.operation_timeout,
                "end_timeout": self.policy.end_timeout}

    def record(self, resp: webob.Response, notify: bool = True) -> None:
        """Nova took an operation nobody prepared for: the agent hosting the VM sends the
        end when it is over, and its monitor knows the silence meanwhile is intended
        (``notify``: the guest hears of it; not where only monitoring is on)."""
        op = self.op
        if self.redis_failed:
            LOG.warning("%s of %s: Redis failed this negotiation; the operation is not "
                        "recorded, so the guest will get no end notice", op.event, self.instance)
            return
        record = self._record(False, notify, time.time())
        record.update(state=operations.FORWARDED, nova_request=self._nova_request(resp))
        try:
            host = self.host or redis_schema.route_of(self.redis, self.instance)
            record["host"] = host
            redis_schema.record_operation(self.redis, self.instance, record,
                                          self.policy.operation_timeout, host=host)
        except redis.RedisError as exc:
            self.redis_failed = True
            LOG.warning("%s of %s: could not record the operation (%s); the guest will get "
                        "no end notice", op.event, self.instance, exc)

    def _ask(self, phase: str, timeout: float, background: bool = False,
             rid: str | None = None) -> tuple:
        """The guest's reply, and the seconds it took (the round trip operators see).

        ``background``: nobody waits for it, so it tries Redis even after a failure.
        """
        details = {**self.op.details, operations.OPERATION_DETAIL: self.op_id}
        request = protocol.request(rid or uuid.uuid4().hex, self.instance, self.op.event,
                                   phase, timeout, details, self.policy.silence)
        started = time.monotonic()
        if self.redis_failed and not background:
            reply = replies.Reply(request["id"], self.instance, replies.UNREACHABLE,
                                       detail="Redis failed earlier in this negotiation",
                                       host=self.host or "")
            return reply, 0.0
        try:
            reply = self.channel.ask(self.host, request)
        except redis.RedisError as exc:
            self.redis_failed = True
            reply = replies.Reply(request["id"], self.instance, replies.UNREACHABLE,
                                       detail=f"Redis unavailable: {exc}", host=self.host)
        if reply.outcome == replies.UNREACHABLE and reply.detail == REDIS_LOST:
            self.redis_failed = True
        return reply, time.monotonic() - started

    def abort(self, why: str) -> None:
        """The operation is off after the prepare: once the caller has its answer, the
        record says so (the agent sends the abort if this process cannot) and this
        negotiation sends it, before it gives the server back. All of it in the
        background: Redis may be what failed."""
        op, instance = self.op, self.instance
        if not self.recorded:
            LOG.info("%s of %s did not happen (%s); no prepare went out", op.event, instance,
                     why)
            return
        LOG.info("%s of %s did not happen (%s): sending abort", op.event, instance, why)

        def send() -> None:
            claim = f"proxy:{uuid.uuid4().hex}"
            try:
                claimed = redis_schema.claim_operation(self.redis, instance, self.op_id, claim,
                                                       self.policy.prepare_timeout + 5)
                redis_schema.update_operation(self.redis, instance, self.op_id,
                                              operations.UNDECIDED,
                                              {"state": operations.REFUSED, "why": why})
            except redis.RedisError as exc:
                LOG.warning("abort of %s of %s left to the agent (Redis: %s)", op.event,
                            instance, exc)
                return
            if not claimed:
                return  # an agent is closing it already
            reply, took = self._ask(protocol.ABORT, self.policy.prepare_timeout,
                                    background=True, rid=operations.closing_id(self.op_id))
            LOG.info("abort of %s of %s: %s%s", op.event, instance, reply.outcome,
                     f" ({reply.detail})" if reply.detail else "")
            self._audit(audit.NOTICE, reply, f"abort sent: {why}", took)
            try:
                if reply.outcome in replies.DELIVERED:
                    if redis_schema.finish_operation(self.redis, instance, self.op_id):
                        redis_schema.audit(self.redis, audit.OPERATION, instance, event=op.event,
                                           action=op.action, outcome="abort-delivered",
                                           why=why, voters=reply.voters, host=self.host or "",
                                           operation=self.op_id, nova_request="")
                else:  # not delivered now: the agent tries again when the guest answers
                    redis_schema.release_claim(self.redis, instance, self.op_id, claim)
            except redis.RedisError as exc:
                LOG.warning("abort of %s of %s: the record is left to the agent (Redis: %s)",
                            op.event, instance, exc)

        # A prepare went out only under this negotiation's lock (run), which is given back
        # once this has run, in the background.
        self._closing = send

    def _release(self, owner: str) -> None:
        """Give the server back; in the background if Redis cannot take it now."""
        def release() -> bool:
            try:
                redis_schema.release_lock(self.redis, self.instance, owner)
            except redis.RedisError as exc:
                LOG.warning("could not release the negotiation lock of %s yet: %s",
                            self.instance, exc)
                return False
            return True

        if not self.redis_failed and release():
            return

        def retry() -> None:
            deadline = time.monotonic() + RELEASE_RETRY
            while time.monotonic() < deadline:
                if release():
                    return
                time.sleep(1.0)

        threading.Thread(target=retry, name=f"release-{self.instance}", daemon=True).start()

    def _audit(self, kind: str, reply: replies.Reply, why: str, took: float,
               **extra) -> None:
        if self.redis_failed:
            LOG.info("audit event not written (Redis failed this negotiation): %s %s %s: %s",
                     kind, self.op.event, self.instance, why)
            return
        try:
            redis_schema.audit(self.redis, kind, self.instance, event=self.op.event,
                               action=self.op.action, request=reply.id, outcome=reply.outcome,
                               voters=reply.voters, why=why, took_ms=round(took * 1000),
                               **extra)
        except redis.RedisError as exc:
            self.redis_failed = True
            LOG.warning("audit event lost (%s): %s %s %s", exc, kind, self.op.event,
                        self.instance)


def filter_factory(global_conf: dict, **local_conf):
    """Paste entry point; the policy is validated here, before any request."""
    conf = {**global_conf, **local_conf}
    try:
        pol = policy.from_conf(conf)
    except policy.PolicyError as exc:
        raise ValueError(f"[filter:negotiation] {exc}") from None
    try:
        check = precheck.from_conf(conf)
    except precheck.PrecheckError as exc:
        raise ValueError(f"[filter:negotiation] {exc}") from None
    channel = GuestChannel(pol.redis_url, pol.redis_max_connections, pol.redis_timeout)
    try:
        channel.redis.ping()
    except redis.RedisError as exc:
        LOG.warning("Redis at %s is not reachable yet (%s); negotiations will follow "
                    "unreachable = %s until it is", redis_schema.redact(pol.redis_url), exc,
                    pol.unreachable)

    def make(app):
        return NegotiationFilter(app, pol, channel, check)

    return make
