"""What each lifecycle operation means for the guest, and when it is over.

Pure: shared by the proxy (which phases to send before Nova acts, which
operation to record) and the agent (is a recorded operation complete, failed,
or still under way, judged from the server as Nova shows it).
"""

from __future__ import annotations

from dataclasses import dataclass

# Nova task states are None once an operation has settled.
WAIT, END, ABORT, GONE, SUPERSEDED = "wait", "end", "abort", "gone", "superseded"


@dataclass(frozen=True)
class Lifecycle:
    """One event's phases.

    ``negotiable``: the guest runs before Nova acts, so it can vote and prepare.
    ``done``: the statuses Nova settles in when the operation succeeded.
    ``end``: whether the guest gets an end notice once it answers again (not
    when the operation leaves it off, frozen or gone: the pair's other half,
    such as start after stop, brings that end; see :func:`tells_guest`).
    ``pending``: statuses that mean Nova has not begun yet. Most operations set
    a task state before Nova's API answers; confirmResize does not (only its
    migration record changes until the compute host acts), so its start state
    must not read as "settled elsewhere".
    """

    event: str
    negotiable: bool
    done: tuple
    end: bool
    pending: tuple = ()


_TABLE = [
    Lifecycle("stop", True, ("SHUTOFF",), False),
    Lifecycle("start", False, ("ACTIVE",), True),
    Lifecycle("reboot", True, ("ACTIVE",), True),
    Lifecycle("pause", True, ("PAUSED",), False),
    Lifecycle("unpause", False, ("ACTIVE",), True),
    Lifecycle("suspend", True, ("SUSPENDED",), False),
    Lifecycle("resume", False, ("ACTIVE",), True),
    # Resizes and cold migrations wait in VERIFY_RESIZE for confirm or revert
    # (or go straight to ACTIVE where Nova confirms them itself).
    Lifecycle("resize", True, ("VERIFY_RESIZE", "ACTIVE"), True),
    Lifecycle("resize-confirm", False, ("ACTIVE", "SHUTOFF"), True, ("VERIFY_RESIZE",)),
    Lifecycle("resize-revert", False, ("ACTIVE", "SHUTOFF"), True),
    Lifecycle("migrate", True, ("VERIFY_RESIZE", "ACTIVE"), True),
    Lifecycle("live-migrate", True, ("ACTIVE",), True),
    Lifecycle("live-migrate-complete", True, ("ACTIVE",), False),
    Lifecycle("live-migrate-abort", True, ("ACTIVE",), False),
    Lifecycle("shelve", True, ("SHELVED", "SHELVED_OFFLOADED"), False),
    Lifecycle("shelve-offload", False, ("SHELVED_OFFLOADED",), False),
    Lifecycle("unshelve", False, ("ACTIVE",), True),
    Lifecycle("rebuild", True, ("ACTIVE",), True),
    # Since microversion 2.95 an evacuated server stays stopped on its new host.
    Lifecycle("evacuate", False, ("ACTIVE", "SHUTOFF"), True),
    Lifecycle("delete", True, (), False),
    Lifecycle("restore", False, ("ACTIVE",), True),
    Lifecycle("crash-dump", True, ("ACTIVE", "SHUTOFF", "ERROR"), False),
    Lifecycle("rescue", True, ("RESCUE",), False),
    Lifecycle("unrescue", False, ("ACTIVE",), True),
]
LIFECYCLES = {lifecycle.event: lifecycle for lifecycle in _TABLE}


def progress(event: str, server: dict | None) -> str:
    """Where a recorded operation stands, from the server Nova shows (None: deleted).

    ``wait`` while Nova works on it, ``end`` once it settled as expected,
    ``abort`` if it settled otherwise (it failed after Nova accepted it),
    ``gone`` if the server no longer exists.
    """
    lifecycle = LIFECYCLES[event]
    if server is None or server.get("status") == "DELETED":
        return GONE
    if server.get("OS-EXT-STS:task_state"):
        return WAIT
    status = server.get("status")
    if status in lifecycle.done:
        return END
    if status in lifecycle.pending:
        return WAIT  # the record's expiry bounds this wait
    if status in ("BUILD", "MIGRATING", "RESIZE", "REBOOT", "HARD_REBOOT", "REBUILD"):
        return WAIT  # transitional statuses sometimes outlive the task state
    return ABORT


RUNNING = ("ACTIVE", "VERIFY_RESIZE")  # statuses in which the guest runs


def tells_guest(event: str, server: dict) -> bool:
    """Whether an operation that ended gets an end notice: only if the guest runs.

    A resize of a stopped server, or an evacuation that leaves it stopped, ends
    with nobody to tell; the start that follows brings its own end.
    """
    return LIFECYCLES[event].end and server.get("status") in RUNNING


def steps(events: list, server: dict | None) -> list:
    """:func:`progress` for an instance's recorded operations, oldest first.

    Nova accepted each newer operation only from the state the older one left,
    so once the newer one is recorded, an older one that is no longer under way
    is over: ``superseded``, with no notice of its own (the guest hears of the
    newer one).
    """
    out = [progress(event, server) for event in events]
    return [SUPERSEDED if i < len(out) - 1 and step != WAIT else step
            for i, step in enumerate(out)]
