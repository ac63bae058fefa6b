"""Vote aggregation: pure, so the rule is stated once and tested directly.

One NACK rejects and every reason is kept. An application that misses its
deadline or answers garbage is "silent", and silence counts as the host's
policy says (``silence`` in the request). Nobody to ask means accept.
"""

from __future__ import annotations

from guestd import protocol


def tally(voters: list, silence: str = protocol.ACCEPT) -> str:
    """The result for a list of :func:`protocol.voter` entries."""
    for entry in voters:
        if entry["vote"] == protocol.REJECT:
            return protocol.REJECT
        if entry["vote"] in (protocol.TIMEOUT, protocol.ERROR) and silence == protocol.REJECT:
            return protocol.REJECT
    return protocol.ACCEPT


def reasons(voters: list, silence: str = protocol.ACCEPT) -> list:
    """Human-readable reasons for a rejection, one per voter that caused it."""
    out = []
    for entry in voters:
        if entry["vote"] == protocol.REJECT:
            out.append(f"{entry['name']}: {entry['reason'] or 'rejected'}")
        elif entry["vote"] in (protocol.TIMEOUT, protocol.ERROR) and silence == protocol.REJECT:
            out.append(f"{entry['name']}: {entry['vote']}" + (
                f" ({entry['reason']})" if entry["reason"] else ""))
    return out
