"""The HTTP headers novaproxy adds to the Nova API, shared by the proxy, the agent and the CLI.

``OpenStack-Novaproxy-Result`` marks the filter's own 409s (``action-rejected``,
``negotiation-in-progress``, ``scale-failed``: :mod:`novaproxy.api.responses`).


``X-Novaproxy-Skip-Negotiation`` asks the negotiation filter to let one
request through without asking the guest. It is honoured only for a
*validated* identity (Nova's request context, or keystonemiddleware's
``auth_token`` in front of the filter), never for the header alone:

- ``true`` (or yes, 1, on): an operator's skip, for the ``admin`` role;
- ``recovery``: the monitor's own recovery action (a hard reboot or stop of a
  failed VM), which is never put to a vote — for the ``admin`` or ``service``
  role the agent's Nova credentials carry.

The filter removes the header, so it never reaches Nova.
"""

RESULT_HEADER = "OpenStack-Novaproxy-Result"
SKIP_HEADER = "X-Novaproxy-Skip-Negotiation"
SKIP_ENVIRON = "HTTP_X_NOVAPROXY_SKIP_NEGOTIATION"
RECOVERY = "recovery"
ADMIN_ROLES = frozenset(["admin"])
RECOVERY_ROLES = frozenset(["admin", "service"])
