"""The audit trail's event kinds: what each one records and who writes it.

Every event is one entry of the capped ``novaproxy:events`` stream
(:func:`novaproxy.redis_schema.audit` writes it, :func:`~novaproxy.redis_schema.read_events`
reads it, ``novaproxy events`` shows it) with the fields ``kind`` (one of the
names below), ``instance`` and ``time`` (seconds since the epoch), plus the
kind's own fields; lists and dicts are JSON.

Written by the proxy (:mod:`novaproxy.api.negotiation`):

- :data:`NEGOTIATION`: a vote and its verdict (``event``, ``action``, ``request``,
  ``outcome``, ``voters``, ``why``, ``took_ms``, ``proceed``);
- :data:`NOTICE`: a prepare or abort notice sent, and how the guest took it
  (the fields of a negotiation);
- :data:`SKIP`: an operation let through without asking the guest, by an
  admin's skip or the monitor's recovery (``event``, ``action``, ``outcome``, ``why``).

Written by the agent (:mod:`novaproxy.agent`):

- :data:`GUEST_ANSWER`: one request delivered to a guest and its answer
  (``request``, ``event``, ``phase``, ``outcome``, ``voters``, ``detail``, ``host``,
  ``took_ms``);
- :data:`MONITOR`: the monitor's state of a VM changed (``event`` and ``outcome``:
  the new state, ``why``, ``host``);
- :data:`FAILURE`: a failure declared (``event``: its cause, ``outcome``,
  ``why``, ``evidence``, ``action``, ``host``);
- :data:`RECOVERY`: what was done about a failure (``event``, ``action``,
  ``outcome``, ``why``, ``detail``, ``evidence``, ``host``);
- :data:`SCALE`: a guest's vCPUs changed, or a change failed (``event``:
  ``scale-down``, ``scale-up`` or ``re-apply`` after a boot; ``outcome``: the vCPUs
  online after, or ``failed``; ``why``, ``host``, ``operation`` for a scale operation).

Written by both (whoever delivered the closing notice):

- :data:`OPERATION`: an operation record closed, its end or abort delivered or
  nothing left to tell (``event``, ``action``, ``outcome``, ``why``, ``voters``,
  ``host``, ``operation``, ``nova_request``).
"""

NEGOTIATION = "negotiation"
NOTICE = "notice"
SKIP = "skip"
GUEST_ANSWER = "guest-answer"
MONITOR = "monitor"
FAILURE = "failure"
RECOVERY = "recovery"
SCALE = "scale"
OPERATION = "operation"
