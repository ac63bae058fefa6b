"""Vote aggregation: pure, so the rule is stated once and tested directly.

One NACK rejects. An application that misses its deadline or answers garbage
is "silent", and silence counts as the host's policy says (``silence`` in the
request). Nobody to ask means accept. guestd tallies every voter and its answer
lists those that decided first (:func:`ranked`), as many as the protocol allows,
each with its reason; the host counts again what it is shown, by the same rules.
"""

from __future__ import annotations

from guestd import protocol


def _silent(entry: dict) -> bool:
    return entry["vote"] in (protocol.TIMEOUT, protocol.ERROR)


def tally(voters: list, silence: str = protocol.ACCEPT) -> str:
    """The result for a list of :func:`protocol.voter` entries."""
    for entry in voters:
        if entry["vote"] == protocol.REJECT or (_silent(entry) and silence == protocol.REJECT):
            return protocol.REJECT
    return protocol.ACCEPT


def ranked(voters: list, silence: str = protocol.ACCEPT) -> list:
    """``voters`` in the order an answer lists them: those that reject, then the silent
    ones when silence rejects, then the rest (each group in its own order), so that a
    cut at :data:`protocol.MAX_VOTERS` keeps every voter that decided a rejection, or
    as many of them as fit."""
    def rank(entry: dict) -> int:
        if entry["vote"] == protocol.REJECT:
            return 0
        return 1 if _silent(entry) and silence == protocol.REJECT else 2

    return sorted(voters, key=rank)


def reasons(voters: list, silence: str = protocol.ACCEPT) -> list:
    """Human-readable reasons for a rejection, one per voter that caused it."""
    out = []
    for entry in voters:
        if entry["vote"] == protocol.REJECT:
            out.append(f"{entry['name']}: {entry['reason'] or 'rejected'}")
        elif _silent(entry) and silence == protocol.REJECT:
            out.append(f"{entry['name']}: {entry['vote']}" + (
                f" ({entry['reason']})" if entry["reason"] else ""))
    return out
