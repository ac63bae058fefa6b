"""The skip switch (:mod:`novaproxy.headers`): whether one request may pass unasked.

Honoured for a validated identity with the right role only (the request's
:meth:`~novaproxy.api._request.NegotiationRequest.validated_identity`), never
for the header alone; each honoured skip is an audit event.
"""

from __future__ import annotations

import logging

import redis

from novaproxy import audit, headers, redis_schema
from novaproxy.api._request import NegotiationRequest
from novaproxy.api.classify import Operation
from novaproxy.flavor import TRUE_WORDS

LOG = logging.getLogger(__name__)


def allowed(req: NegotiationRequest, op: Operation, instance: str, value: str,
            client: redis.Redis) -> bool:
    """Whether the switch's ``value`` lets ``op`` on ``instance`` through unasked."""
    recovery = value == headers.RECOVERY
    if not recovery and value not in TRUE_WORDS:
        LOG.warning("%s: %r is not a value it takes; negotiating %s of %s",
                    headers.SKIP_HEADER, value, op.event, instance)
        return False
    roles_needed = headers.RECOVERY_ROLES if recovery else headers.ADMIN_ROLES
    roles, who = req.validated_identity()
    if not roles & roles_needed:
        LOG.warning("%s: %s from %s ignored for %s of %s: needs a validated role of %s; "
                    "negotiating", headers.SKIP_HEADER, value, who, op.event, instance,
                    "/".join(sorted(roles_needed)))
        return False
    why = f"{'recovery' if recovery else 'admin skip'} by {who}"
    LOG.info("%s of %s: not negotiated (%s)", op.event, instance, why)
    try:
        redis_schema.audit(client, audit.SKIP, instance, event=op.event, action=op.action,
                           outcome="skipped", why=why)
    except redis.RedisError as exc:
        LOG.warning("audit event lost (%s): skip %s %s", exc, op.event, instance)
    return True
