"""The filter's own answers to the caller, in Nova's error envelope.

A caller (or a script) tells them apart by the marker, which is both the
message's prefix and the value of ``OpenStack-Novaproxy-Result``.
"""

from __future__ import annotations

import logging

import webob

from guestd import protocol
from novaproxy import headers
from novaproxy.api import policy
from novaproxy.api.classify import Operation

LOG = logging.getLogger(__name__)
REJECTED = "action-rejected"
IN_PROGRESS = "negotiation-in-progress"
SCALE_FAILED = "scale-failed"  # the guest could not make a vCPU change (novaproxy.api.scale)
RESULT_HEADER = headers.RESULT_HEADER


def nova_error(status: int, key: str, message: str) -> webob.Response:
    """HTTP ``status`` in Nova's error envelope: ``{key: {"code": ..., "message": ...}}``."""
    resp = webob.Response(status=status, charset="UTF-8", content_type="application/json")
    resp.json_body = {key: {"code": status, "message": message}}
    return resp


def bad_request(message: str) -> webob.Response:
    return nova_error(400, "badRequest", message)


def forbidden(message: str) -> webob.Response:
    return nova_error(403, "forbidden", message)


def not_found(message: str) -> webob.Response:
    return nova_error(404, "itemNotFound", message)


def nova_conflict(message: str) -> webob.Response:
    """HTTP 409 as Nova words it (a server in the wrong state), with no marker."""
    return nova_error(409, "conflictingRequest", message)


def conflict(message: str, marker: str) -> webob.Response:
    """HTTP 409 in Nova's error envelope, with the marker in message and header."""
    resp = nova_conflict(f"{marker}: {message}")
    resp.headers[RESULT_HEADER] = marker
    return resp


def cannot_ask(pol: policy.Policy, op: Operation, instance: str,
               why: str) -> webob.Response | None:
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
    return nova_error(503, "serviceUnavailable", message)


def too_large(message: str) -> webob.Response:
    """HTTP 413 in Nova's error envelope (Nova's own answer to an oversized body)."""
    return nova_error(413, "overLimit", message)
