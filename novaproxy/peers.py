"""Peer state notices (``docs/group-messaging.md``, "Peer state notices"), pure.

Every member of a server group that takes messages is told when another member is
about to be acted on, changes monitor state, is stopped, paused or crashed, or
loses its host. A notice is ``{peer, name, state, cause, since, seq}``: ``seq``
grows per peer (whoever publishes), so a recipient keeps the highest it saw. The
host keeps only the latest notice per peer for each recipient (coalesced), so a
slow or booting recipient gets each peer's latest state, not a backlog.
"""

from __future__ import annotations

from guestd import protocol
from novaproxy import groups
from novaproxy.groups import Group, Member

EVENT = protocol.GROUP  # notices travel as group requests ...
PHASE = protocol.PEER  # ... of this phase
# States besides the monitor's (suspect, failed, recovering, healthy, left-alone), which
# are told as the monitor names them.
PREPARED, ENDED, ABORTED = "prepared", "ended", "aborted"  # "<event> <which>"
# As libvirt says; running: started or resumed again (after a stop, a pause, a reboot).
STOPPED, PAUSED, CRASHED, RUNNING = "stopped", "paused", "crashed", "running"
UNREACHABLE = "unreachable"  # its host's agent stopped renewing its liveness key
REACHABLE = "reachable"  # its host's agent is back after it was announced unreachable
MAX_CAUSE = 200  # characters of a cause


def operation_state(event: str, which: str) -> str:
    """The state told for a negotiated operation: ``"reboot prepared"``, ``"stop ended"``."""
    return f"{event} {which}"


def libvirt_state(event_name: str, fatal: bool) -> str:
    """The state told for a libvirt lifecycle event (its Masakari-style name, such as
    ``STOPPED_SHUTDOWN``; ``fatal`` as :mod:`agent.lifecycle_events` means it), or ""
    for one peers need not hear of (a migration's leg, a definition)."""
    if fatal:
        return CRASHED
    if event_name.endswith("_MIGRATED") or event_name.startswith("RESUMED_POSTCOPY"):
        return ""
    if event_name.startswith("STOPPED_"):
        return STOPPED
    if event_name.startswith(("SUSPENDED_", "PMSUSPENDED_")):
        return PAUSED
    if event_name.startswith(("STARTED_", "RESUMED_")):
        return RUNNING
    return ""


def notice(peer: str, name: str, state: str, cause: str, since: float, seq: int) -> dict:
    """One notice, as stored and as guestd hands it to applications."""
    return {"peer": peer, "name": name, "state": state, "cause": cause[:MAX_CAUSE],
            "since": since, "seq": seq}


def told(peer: str, subject: Member | None, group: Group | None, members: dict) -> list:
    """Who is told of ``peer``: the other members of its Nova server group whose flavor
    turns messaging on (``members``: member -> :class:`Member`); nobody when ``peer``
    is in no group or the group is over :data:`groups.MAX_GROUP`."""
    if (subject is None or not subject.known or not subject.group or group is None
            or peer not in group.members or len(group.members) > groups.MAX_GROUP):
        return []
    return [m for m in group.members
            if m != peer and members.get(m) is not None and members[m].messaging]


def peer_request(instance: str, notice_: dict, timeout: float) -> dict:
    """The spool request telling ``instance`` one peer's latest state."""
    rid = f"peer-{notice_['peer']}-{notice_['seq']}"
    return protocol.request(rid, instance, EVENT, PHASE, timeout, notice_)
