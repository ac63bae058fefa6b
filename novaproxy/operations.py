"""What each lifecycle operation means for the guest, its record, and when it is over.

Pure: shared by the proxy (which phases to send before Nova acts, the record
it keeps of each operation) and the agent (is a recorded operation complete,
failed, never acted on, or still under way, judged from Nova's evidence).

An operation record (:mod:`novaproxy.redis_schema` stores it) is written
before the prepare goes out, so that a prepared guest always has something
that leads to its closing notice. Its ``state`` says how far the proxy got:

- ``preparing``: the negotiation runs; its proxy holds the server's lock
  (``owner`` is the lock's token).
- ``forwarding``: the request is on its way to Nova. The proxy moves the
  record here only while it still holds the lock, and never forwards
  otherwise, so once the lock is lost a ``preparing`` record will never reach
  Nova through this negotiation.
- ``forwarded``: Nova accepted it (``nova_request``: Nova's request id).
- ``unknown``: Nova's answer is unknown (an error, or no answer in time); Nova
  may still have acted.
- ``refused``: Nova refused it, or the negotiation stopped it: abort is due.

The agent closes a record from Nova's own evidence: the server (status, task
state, host) and the instance action Nova recorded for it. It never guesses:
a record without a Nova action is called "never acted on" only once no
negotiation holds the server and ``decide_by`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

WAIT, END, ABORT, GONE = "wait", "end", "abort", "gone"
# Verdicts that close a record with no notice.
COMPLETE, FAILED = "complete", "failed"
PREPARING, FORWARDING, FORWARDED, UNKNOWN, REFUSED = (
    "preparing", "forwarding", "forwarded", "unknown", "refused")
# Records whose proxy may still move them on (or may have died doing so).
UNDECIDED = (PREPARING, FORWARDING, UNKNOWN)
# Notices of a recorded operation carry its id under this key of their details, so an
# application can pair a prepare with its closing notice.
OPERATION_DETAIL = "operation"
# How far Nova's clock may be behind the proxy's (hosts run NTP): an instance action
# of the right kind that started this long before the record's forwarding may still be
# its, if none started after. (Another request of that kind on that server within
# this second, unasked, could be taken for it.)
CLOCK_SKEW = 1.0


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
    ``nova_action``: the instance action Nova records for it
    (``nova.compute.instance_actions``).
    ``moves``: it succeeded only if the server is on another host now.
    ``in_guest``: carried out inside the guest by its host's agent, not by Nova (vCPU
    scaling): no instance action; whether it happened is the guest's own view
    (:func:`novaproxy.scaling.outcome`).
    """

    event: str
    negotiable: bool
    done: tuple
    end: bool
    nova_action: str
    pending: tuple = ()
    moves: bool = False
    in_guest: bool = False


_TABLE = [
    Lifecycle("stop", True, ("SHUTOFF",), False, "stop"),
    Lifecycle("start", False, ("ACTIVE",), True, "start"),
    Lifecycle("reboot", True, ("ACTIVE",), True, "reboot"),
    Lifecycle("pause", True, ("PAUSED",), False, "pause"),
    Lifecycle("unpause", False, ("ACTIVE",), True, "unpause"),
    Lifecycle("suspend", True, ("SUSPENDED",), False, "suspend"),
    Lifecycle("resume", False, ("ACTIVE",), True, "resume"),
    # Resizes and cold migrations wait in VERIFY_RESIZE for confirm or revert
    # (or go straight to ACTIVE where Nova confirms them itself).
    Lifecycle("resize", True, ("VERIFY_RESIZE", "ACTIVE"), True, "resize"),
    Lifecycle("resize-confirm", False, ("ACTIVE", "SHUTOFF"), True, "confirmResize",
              pending=("VERIFY_RESIZE",)),
    Lifecycle("resize-revert", False, ("ACTIVE", "SHUTOFF"), True, "revertResize"),
    Lifecycle("migrate", True, ("VERIFY_RESIZE", "ACTIVE"), True, "migrate", moves=True),
    Lifecycle("live-migrate", True, ("ACTIVE",), True, "live-migration", moves=True),
    Lifecycle("live-migrate-complete", True, ("ACTIVE",), False,
              "live_migration_force_complete"),
    Lifecycle("live-migrate-abort", True, ("ACTIVE",), False, "live_migration_cancel"),
    Lifecycle("shelve", True, ("SHELVED", "SHELVED_OFFLOADED"), False, "shelve"),
    Lifecycle("shelve-offload", False, ("SHELVED_OFFLOADED",), False, "shelveOffload"),
    Lifecycle("unshelve", False, ("ACTIVE",), True, "unshelve"),
    Lifecycle("rebuild", True, ("ACTIVE",), True, "rebuild"),
    # Since microversion 2.95 an evacuated server stays stopped on its new host.
    Lifecycle("evacuate", False, ("ACTIVE", "SHUTOFF"), True, "evacuate", moves=True),
    Lifecycle("delete", True, (), False, "delete"),
    Lifecycle("restore", False, ("ACTIVE",), True, "restore"),
    Lifecycle("crash-dump", True, ("ACTIVE", "SHUTOFF", "ERROR"), False, "trigger_crash_dump"),
    Lifecycle("rescue", True, ("RESCUE",), False, "rescue"),
    Lifecycle("unrescue", False, ("ACTIVE",), True, "unrescue"),
    # vCPU scaling (novaproxy.scaling): the guest runs throughout.
    Lifecycle("scale-down", True, ("ACTIVE",), False, "", in_guest=True),
    Lifecycle("scale-up", True, ("ACTIVE",), False, "", in_guest=True),
]
LIFECYCLES = {lifecycle.event: lifecycle for lifecycle in _TABLE}
NOVA_ACTIONS = frozenset(lifecycle.nova_action for lifecycle in _TABLE if lifecycle.nova_action)


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


def closing_id(op_id: str) -> str:
    """The request id of an operation's closing notice, whoever sends it (the proxy or an
    agent, once or again): guestd delivers a request id at most once, so an operation's
    applications hear one closing notice."""
    return f"close-{op_id}"


def _started(action: dict) -> float:
    """An instance action's start, as a Unix time (Nova writes naive UTC times)."""
    try:
        started = datetime.fromisoformat(str(action.get("start_time")))
    except ValueError:
        return 0.0
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return started.timestamp()


def find_action(record: dict, actions: list, taken: set = frozenset()) -> dict | None:
    """The instance action Nova recorded for ``record``, if any.

    By Nova's request id when the proxy learnt it. A record still ``preparing`` was
    never forwarded, so no action is its. Otherwise the earliest action of the
    event's kind that no other record names (``taken``: their request ids) and that
    started after the record's forwarding; failing that, the latest one that started
    up to the clock skew before it (Nova's clock may be a little behind the proxy's).
    """
    if record.get("nova_request"):
        return next((a for a in actions if a.get("request_id") == record["nova_request"]), None)
    if record.get("state") == PREPARING:
        return None
    kind = LIFECYCLES[record["event"]].nova_action
    forwarded = float(record.get("forwarded_at") or record.get("created", 0))
    mine = sorted((a for a in actions if a.get("action") == kind
                   and a.get("request_id") not in taken), key=_started)
    after = [a for a in mine if _started(a) >= forwarded]
    if after:
        return after[0]
    skewed = [a for a in mine if _started(a) >= forwarded - CLOCK_SKEW]
    return skewed[-1] if skewed else None


def overtaken(action: dict | None, actions: list) -> bool:
    """Nova has started another lifecycle action on the server since ``action``: it
    accepted that one from the state ``action`` left, so ``action`` is over (recorded by
    the proxy or not: a direct call, an agent's recovery)."""
    if action is None:
        return False
    started = _started(action)
    return any(other.get("action") in NOVA_ACTIONS and _started(other) > started
               and other.get("request_id") != action.get("request_id") for other in actions)


def stayed(record: dict, server: dict | None) -> bool:
    """The server is still on the host its operation was negotiated on."""
    return bool(record.get("host")) and (
        (server or {}).get("OS-EXT-SRV-ATTR:host") == record["host"])


def running(action: dict | None) -> bool:
    """One of ``action``'s events has not finished: Nova is still at it. Only the action's
    detail lists its events (the agent reads it where this matters: a moving operation
    that looks settled on its old host)."""
    return action is not None and any(
        isinstance(event, dict) and not event.get("finish_time")
        for event in action.get("events") or ())


@dataclass(frozen=True)
class Verdict:
    step: str  # WAIT; END or ABORT: that notice is due; GONE, COMPLETE, FAILED: no notice
    why: str
    # WAIT for the guest to run again, for an operation already decided: END. Its group
    # may hear of the end now (a stopped member's peers need not wait for its start).
    decided: str = ""


def verdict(record: dict, server: dict | None, action: dict | None, negotiating: bool,
            superseded: bool, now: float, in_guest: tuple = (None, "")) -> Verdict:
    """What to do with a recorded operation now, from Nova's evidence.

    ``action``: Nova's instance action for it (:func:`find_action`), or None.
    ``negotiating``: its proxy still holds the server's lock.
    ``superseded``: Nova has accepted a newer recorded operation since, so the
    server's state is that one's, and this one is over unless its action failed.
    ``in_guest``: for an operation carried out in the guest, whether it happened
    there by the guest's own view (True, False, None for unknown) and why.
    """
    outcome = _outcome(record, server, action, negotiating, superseded, now, in_guest)
    if outcome.step not in (END, ABORT):
        return outcome
    event, running = record["event"], (server or {}).get("status") in RUNNING
    if outcome.step == ABORT:
        return outcome if record.get("prepared") else Verdict(
            FAILED, f"{outcome.why}; the guest was not prepared")
    if not record.get("notify", True):
        return Verdict(COMPLETE, f"{outcome.why}; the guest is monitored, not negotiated "
                       "with: no notice")
    # A prepare is always closed, and an operation that brings the guest back (or moves
    # it) is announced: once the guest runs to hear it, before any newer notice.
    if record.get("prepared") or LIFECYCLES[event].end:
        return outcome if running else Verdict(
            WAIT, f"{outcome.why}; its end notice waits for the guest to run again", END)
    return Verdict(COMPLETE, f"{outcome.why}; nothing to tell the guest")


def judged_by_guest(record: dict, negotiating: bool) -> bool:
    """Whether an operation happened is the guest's own view: one carried out in the
    guest (vCPU scaling) that its proxy left while the agent applied it, or before, or
    whose apply went unanswered (``unknown``)."""
    state = record.get("state", FORWARDED)
    return LIFECYCLES[record["event"]].in_guest and (
        state == UNKNOWN or (state == FORWARDING and not negotiating))


def _outcome(record: dict, server: dict | None, action: dict | None, negotiating: bool,
             superseded: bool, now: float, in_guest: tuple) -> Verdict:
    """Whether the operation happened (END), did not (ABORT), or is not over (WAIT)."""
    event, state = record["event"], record.get("state", FORWARDED)
    lifecycle = LIFECYCLES[event]
    if server is None or server.get("status") == "DELETED":
        return Verdict(GONE, "the server no longer exists")
    if state == REFUSED:
        return Verdict(ABORT, record.get("why") or "Nova did not act on it")
    if judged_by_guest(record, negotiating):
        happened, why = in_guest
        if happened is None:
            return Verdict(WAIT, f"whether it happened is not known yet: {why}")
        return Verdict(END if happened else ABORT, why)
    if action is None and state != FORWARDED:
        if negotiating and state != UNKNOWN:
            return Verdict(WAIT, "its negotiation is still running")
        if state == PREPARING:  # never forwarded: the proxy forwards only while it holds the lock
            return Verdict(ABORT, "its negotiation ended before the request went to Nova "
                           "(the proxy stopped or lost the server's lock)")
        if now < float(record.get("decide_by", 0)):
            return Verdict(WAIT, "Nova has recorded no such action yet")
        return Verdict(ABORT, f"Nova never acted on it: no {lifecycle.nova_action} action "
                       "of this server since it was forwarded")
    named = f" (request {action.get('request_id')})" if action else ""
    failed = action is not None and action.get("message") == "Error"
    if superseded:
        if failed:
            return Verdict(ABORT, f"Nova's {lifecycle.nova_action} action failed{named}")
        return Verdict(END, f"Nova completed it{named} and accepted a newer operation since")
    step = progress(event, server)
    if step == WAIT:
        return Verdict(WAIT, "Nova is still working on it")
    status = server.get("status")
    if failed:
        return Verdict(ABORT, f"Nova's {lifecycle.nova_action} action failed{named}; "
                       f"the server settled in {status}")
    if step == END and lifecycle.moves and stayed(record, server):
        if running(action):
            # An evacuation settles its status on the new host before Nova moves the
            # server there: the host changes last, when its compute event finishes.
            return Verdict(WAIT, f"Nova's {lifecycle.nova_action} action{named} is still "
                           f"running (the server is {status} on {record['host']} meanwhile)")
        return Verdict(ABORT, f"Nova settled in {status} on the same host {record['host']}: "
                       "the server did not move")
    if step == END:
        return Verdict(END, f"Nova reports {status}{named}")
    return Verdict(ABORT, f"Nova settled in {status}{named}")
