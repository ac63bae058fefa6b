"""An agent's answer to one guest request, as the proxy and the agent exchange it.

The message type, apart from where it travels: :mod:`novaproxy.redis_schema`
carries it (one entry of a proxy's reply stream, field ``reply``, JSON), and it
is also what the proxy makes up itself when it could not ask at all.

``outcome`` is one of the guest's own results (:data:`guestd.protocol.ACCEPT`,
``REJECT``, ``NOT_NEGOTIATING``) or one of the transport outcomes below, which
say why there is no valid answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from guestd import protocol

TIMEOUT = "timeout"  # the guest did not answer within the deadline
UNREACHABLE = "unreachable"  # no guest agent to talk to, or the VM is not on this host
INVALID = "invalid"  # the guest answered something that is not a valid answer
EXPIRED = "expired"  # the request's deadline had passed before the agent could deliver it
# Outcomes that mean guestd took the request (a notice reached the applications).
DELIVERED = (protocol.ACCEPT, protocol.REJECT, protocol.NOT_NEGOTIATING, INVALID)


@dataclass(frozen=True)
class Reply:
    """An agent's answer to one request: the guest's answer, or why there is none."""

    id: str
    instance: str
    outcome: str
    voters: list = field(default_factory=list)
    detail: str = ""
    host: str = ""
    # What the agent itself answers (its own requests, e.g. a guest's vCPUs): JSON values.
    data: dict = field(default_factory=dict)

    def fields(self) -> dict:
        """The stream entry's fields."""
        return {"reply": json.dumps(self.__dict__)}

    @classmethod
    def from_fields(cls, fields: dict) -> Reply:
        """From a stream entry; fields a newer agent added are ignored."""
        data = json.loads(fields["reply"])
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
