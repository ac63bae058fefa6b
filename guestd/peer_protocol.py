"""Peer state notices, guestd's side of the wire (``docs/group-messaging.md``).

The host tells a guest another member's latest state as a request of event ``group``
and phase ``peer`` whose details are the notice ``{peer, name, state, cause, since,
seq}``. guestd hands it to applications registered for ``group`` as a
``peer-notice`` on their socket, and to group hooks (``HOOK group peer``, the notice
as JSON on stdin). ``seq`` grows per peer: a notice with a lower seq than one already
handed out for that peer is stale (the host delivers at least once, possibly late).
"""

from __future__ import annotations

from dataclasses import dataclass

from guestd.group_protocol import member
from guestd.protocol import MAX_NAME, MAX_REASON, VERSION, ProtocolError

PEER_NOTICE = "peer-notice"  # guestd -> application
MAX_STATE = MAX_NAME


@dataclass(frozen=True)
class PeerNotice:
    """Another member's latest state: ``peer`` (its Nova UUID), its server ``name``,
    ``state`` (e.g. ``failed``, ``reboot prepared``, ``unreachable``), why (``cause``),
    since when (``since``, seconds since the epoch) and its per-peer ``seq``."""

    peer: str
    name: str
    state: str
    cause: str
    since: float
    seq: int

    @classmethod
    def of(cls, message: dict) -> PeerNotice:
        return cls(message["peer"], message["name"], message["state"], message["cause"],
                   message["since"], message["seq"])


def _text(value: object, field: str, limit: int, empty: bool = True) -> str:
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise ProtocolError(f"{field} must be a string of at most {limit} characters")
    return value


def parse_peer_details(details: dict) -> dict:
    """A PEER request's details, checked (raises ProtocolError)."""
    seq, since = details.get("seq"), details.get("since")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < 2 ** 53:
        raise ProtocolError("seq must be a positive integer")
    if isinstance(since, bool) or not isinstance(since, (int, float)) or since < 0:
        raise ProtocolError("since must be a time in seconds")
    return {"peer": member(details.get("peer"), "peer"),
            "name": _text(details.get("name", ""), "name", 255),
            "state": _text(details.get("state"), "state", MAX_STATE, empty=False),
            "cause": _text(details.get("cause", ""), "cause", MAX_REASON),
            "since": float(since), "seq": seq}


def peer_notice(details: dict) -> dict:
    """What an application (or a group hook, on stdin) gets of a peer notice."""
    return {"v": VERSION, "type": PEER_NOTICE, **details}
