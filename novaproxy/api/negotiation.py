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

The boundary, every key the filter reads or writes (POST and DELETE only; any
other method passes with no key read but the first and the skip switch removed):

Request environ and headers read:

``REQUEST_METHOD``
    only POST and DELETE can be lifecycle operations.
``SCRIPT_NAME``, ``PATH_INFO``, ``REQUEST_URI``, ``RAW_URI``
    the path Nova's router will see (:mod:`novaproxy.api.paths`).
``CONTENT_LENGTH``, ``wsgi.input``
    an action's body, read at most once (``classify.MAX_BODY``), kept seekable
    and handed on unchanged; a larger one is answered 413.
``HTTP_X_NOVAPROXY_SKIP_NEGOTIATION`` (``X-Novaproxy-Skip-Negotiation``)
    the skip switch (:mod:`novaproxy.api.skip`); always removed, so it never
    reaches Nova.
``nova.context``, ``keystone.token_auth``
    the validated identity (Nova's context in its own pipeline, else
    keystonemiddleware's auth_token): roles for the skip switch, the caller's
    authorisation for the precheck. Never headers.
``HTTP_OPENSTACK_API_VERSION``, ``HTTP_X_OPENSTACK_NOVA_API_VERSION``, ``openstack.legacy_v2``
    the microversion Nova will serve the request at (the precheck).
``openstack.request_id``
    Nova's request id (in-process), when its answer carries none.

Request environ written:

``PATH_INFO``
    set to the path the request was classified by, if the client spelled it
    otherwise.

The filter's own look-ups (GET of the server and a resize's flavor, as the
caller, :meth:`~novaproxy.api._request.NegotiationRequest.subrequest`) copy the
caller's environ, go to the v2.1 API, drop ``openstack.legacy_v2``, and set
``OpenStack-API-Version`` and ``X-OpenStack-Nova-API-Version`` (2.47),
``Accept`` and ``novaproxy.forward.read_timeout``.

Response headers read:

``x-openstack-request-id``, ``x-compute-request-id``
    Nova's request id, recorded with the operation (its instance action).

Response headers written (the filter's own answers, :mod:`novaproxy.api.responses`):

``OpenStack-Novaproxy-Result``
    ``action-rejected``, ``negotiation-in-progress`` or ``scale-failed`` on a 409 of
    the filter's.

The filter's own server action, ``novaproxy-scale`` (vCPU scaling,
:mod:`novaproxy.api.scale`), is answered here and never forwarded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Callable

import redis
import webob
import webob.dec

from novaproxy import headers, redis_schema
from novaproxy.api import _nova, classify, policy, precheck, skip
from novaproxy.api._guest import GuestChannel
from novaproxy.api._request import NegotiationRequest
from novaproxy.api.phases import Negotiation
from novaproxy.api.responses import cannot_ask, too_large
from novaproxy.api.scale import ScaleAction

LOG = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class NegotiationFilter:
    """Which requests are negotiated; each one that is goes through a :class:`Negotiation`."""

    def __init__(self, app: WSGIApp, pol: policy.Policy, channel: GuestChannel,
                 check: precheck.Precheck) -> None:
        self.app = app
        self.policy = pol
        self.channel = channel
        self.precheck = check
        self.scale = ScaleAction(app, pol, channel)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        # Only POST and DELETE can be lifecycle operations: everything else
        # goes straight on, without even a request object (pass-through cost).
        if environ.get("REQUEST_METHOD") not in ("POST", "DELETE"):
            environ.pop(headers.SKIP_ENVIRON, None)  # our switch never reaches Nova
            return self.app(environ, start_response)
        return self._maybe_negotiate(environ, start_response)

    @webob.dec.wsgify(RequestClass=NegotiationRequest)
    def _maybe_negotiate(self, req: NegotiationRequest) -> webob.Response:
        switch = req.environ.pop(headers.SKIP_ENVIRON, "").strip().lower()
        try:
            op = req.operation()
        except classify.BodyTooLarge as exc:
            LOG.info("%s %s refused: %s", req.method, req.routed_path(), exc)
            return too_large(str(exc))
        if op is not None and op.action == classify.SCALE:  # the proxy's own: never Nova's
            return self.scale(req, op)
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
        negotiation = Negotiation(self.app, self.policy, self.channel, req, op, server)
        instance = negotiation.instance
        if not policy.settings_known(server):
            why = ("whether it is negotiated is unknown: Nova shows the caller no flavor "
                   "extra specs (policy os_compute_api:servers:show:flavor-extra-specs)")
            return cannot_ask(self.policy, op, instance, why) or req.get_response(self.app)
        if not policy.negotiates(server):
            resp = req.get_response(self.app)
            if policy.monitored(server) and resp.status_int < 400:
                negotiation.record_unprepared(resp, notify=False)
            return resp
        if switch and skip.allowed(req, op, instance, switch, self.channel.redis):
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
                negotiation.record_unprepared(resp)
            return resp
        return negotiation.run()


def filter_factory(global_conf: dict, **local_conf) -> Callable[[WSGIApp], NegotiationFilter]:
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

    def make(app: WSGIApp) -> NegotiationFilter:
        return NegotiationFilter(app, pol, channel, check)

    return make
