"""The novaproxy wire protocol: host ↔ guestd-ctl ↔ guestd ↔ applications.

One module owns every message shape and limit, and both sides import it (the host
treats everything coming back as untrusted input). How a message travels as bytes is
:mod:`guestd.framing`'s; its names are this module's too (``protocol.encode``,
``protocol.decode``, ``protocol.FrameDecoder``...), so that this import is all either
side needs.

Compatibility: every message carries ``v``. Readers ignore fields they do not
know and accept any version ≥ 1 as long as the fields they need are there, so
older and newer peers interoperate.

No limit may cost a rejection. An answer's ``result`` is tallied over every voter;
it lists at most :data:`MAX_VOTERS` of them, those that decided first, says in
``voters_total`` how many there were, and shortens reasons as needed to fit the
frame (:func:`fit_answer`). An older guestd lists every voter and no
``voters_total``: a reader keeps the whole list (the frame bounds it) for the host
to choose from and count again.

This module imports nothing at load time but :mod:`guestd.framing`, and ``json``
only to check a request's details: ``guestd-ctl`` imports it on every host request.
"""

from __future__ import annotations

from guestd.framing import MAX_FRAME, ProtocolError, compact, decode
from guestd.framing import FrameDecoder as FrameDecoder  # re-exported: see above
from guestd.framing import encode as encode  # re-exported: see above

VERSION = 1
MAX_REASON = 512
MAX_NAME = 64
MAX_VOTERS = 64
MAX_DETAILS = 8 * 1024
# A group request's details carry a message body or a receipt's results: the frame
# bounds them instead (guestd.group_protocol bounds what is inside).
MAX_GROUP_DETAILS = MAX_FRAME
MAX_APPS = 64  # applications listed in the status file
# vCPU scaling: the vCPUs one application offers to take offline in a prepare. CPU 0
# never goes offline; MAX_CPU is novaproxy.scaling.MAX_CPUS (guestd cannot import it).
MAX_OFFERED = 16
MAX_CPU = 4096

# Phases of a lifecycle operation, in the order the guest sees them.
VOTE, PREPARE, END, ABORT = "vote", "prepare", "end", "abort"
PHASES = (VOTE, PREPARE, END, ABORT)
# Server-group messaging (guestd.group_protocol): requests of event GROUP, in one of
# its own phases: a message for this guest's applications, a receipt for its outbox, a
# sent message's final delivery report, or a peer's latest state (guestd.peer_protocol).
GROUP = "group"
MESSAGE, RECEIPT, REPORT, PEER = "message", "receipt", "report", "peer"
GROUP_PHASES = (MESSAGE, RECEIPT, REPORT, PEER)

# Individual votes, and the outcome of a tally.
ACCEPT, REJECT = "accept", "reject"
TIMEOUT, ERROR = "timeout", "error"
BALLOTS = (ACCEPT, REJECT, TIMEOUT, ERROR)
# Answer results only the transport produces: guestd is not installed or not
# running in the guest.
NOT_NEGOTIATING = "not-negotiating"
RESULTS = (ACCEPT, REJECT, NOT_NEGOTIATING)

# Message types.
REQUEST = "request"  # host -> guestd (through guestd-ctl)
ANSWER = "answer"  # guestd -> host
REGISTER = "register"  # application -> guestd
REGISTERED = "registered"  # guestd -> application
NOTICE = "notice"  # guestd -> application
BALLOT = "ballot"  # application -> guestd: its vote on a notice
DONE = "done"  # application -> guestd: a non-vote notice was handled
FAILURE = "error"  # either way: what went wrong
HEALTH = "health"  # application -> guestd: how it is doing
STATUS = "status"  # guestd -> host, through the status file it rewrites every beat

# Corrective actions an unhealthy application may ask the host for. They only
# ever act on the application's own VM, and the host rate-limits them.
LOG_ONLY, REBOOT, STOP = "log", "reboot", "stop"
ACTIONS = (LOG_ONLY, REBOOT, STOP)


# The spool: the host writes a request frame to ``<spool>/<id>.req`` with qemu-ga's
# guest-file-* RPCs (no process started in the guest) and reads the answer frame
# guestd puts in ``<spool>/<id>.ans``.
REQ_SUFFIX, ANS_SUFFIX = ".req", ".ans"

# Where guestd is in a guest unless told otherwise: the defaults of guestd's --socket,
# --spool-dir and --status-file, which the host's configuration defaults to as well.
DEFAULT_SOCKET = "/run/guestd/guestd.sock"
DEFAULT_SPOOL_DIR = "/run/guestd/spool"
DEFAULT_STATUS_FILE = "/run/guestd/status.json"


def spool_name(rid: str) -> str:
    """``rid`` if it is safe as a spool file name (``[A-Za-z0-9_-]{1,64}``): a request id
    becomes a path in the guest, so nothing in it may leave the spool directory."""
    if not (isinstance(rid, str) and 0 < len(rid) <= MAX_NAME and rid.isascii()
            and all(c.isalnum() or c in "_-" for c in rid)):
        raise ProtocolError(f"request id {rid!r:.80} is not a spool file name")
    return rid


def _text(value: object, field: str, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError(f"{field} must be a non-empty string")
    return value[:limit]


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise ProtocolError("timeout must be a number of seconds in (0, 3600]")
    return float(value)


def request(rid: str, instance: str, event: str, phase: str, timeout: float,
            details: dict | None = None, silence: str = ACCEPT) -> dict:
    """What the host asks the guest: one phase of one operation."""
    return {"v": VERSION, "type": REQUEST, "id": rid, "instance": instance,
            "event": event, "phase": phase, "timeout": timeout,
            "details": details or {}, "silence": silence}


def parse_request(message: dict) -> dict:
    """Validate a host request; unknown phases are kept (a newer host's notices)."""
    if message.get("type") != REQUEST:
        raise ProtocolError(f"expected a {REQUEST}, got {message.get('type')!r}")
    import json

    details = message.get("details")
    details = {} if details is None else details
    limit = MAX_GROUP_DETAILS if message.get("event") == GROUP else MAX_DETAILS
    if not isinstance(details, dict) or len(json.dumps(details)) > limit:
        raise ProtocolError(f"details must be an object under {limit} bytes")
    silence = message.get("silence", ACCEPT)
    if silence not in (ACCEPT, REJECT):
        raise ProtocolError("silence must be accept or reject")
    return request(
        rid=_text(message.get("id"), "id", MAX_NAME),
        instance=_text(message.get("instance"), "instance", MAX_NAME),
        event=_text(message.get("event"), "event", MAX_NAME),
        phase=_text(message.get("phase"), "phase", MAX_NAME),
        timeout=_timeout(message.get("timeout")),
        details=details,
        silence=silence,
    )


def parse_offline(value: object) -> tuple:
    """The vCPUs an application offers to take offline, from a ``done`` message, a hook's
    output or an answer's voter: a list of at most :data:`MAX_OFFERED` distinct whole
    numbers from 1 to ``MAX_CPU - 1``, in the order the application prefers them."""
    if not isinstance(value, list):
        raise ProtocolError(f"offline must be a list of vCPU numbers, not {value!r:.40}")
    if len(value) > MAX_OFFERED:
        raise ProtocolError(f"offline names {len(value)} vCPUs, more than {MAX_OFFERED}")
    for cpu in value:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 < cpu < MAX_CPU:
            raise ProtocolError(f"{cpu!r:.40} is not a vCPU that can go offline "
                                f"(a whole number from 1 to {MAX_CPU - 1}; CPU 0 stays)")
    if len(set(value)) < len(value):
        raise ProtocolError("offline names a vCPU more than once")
    return tuple(value)


def voter(name: str, ballot: str, reason: str = "", offline: tuple = ()) -> dict:
    """Who answered what; ``offline`` (a prepare's picks, :func:`parse_offline`) is
    listed only when there are some, so that every other entry stays as it was."""
    entry = {"name": name[:MAX_NAME], "vote": ballot, "reason": reason[:MAX_REASON]}
    if offline:
        entry["offline"] = list(offline)
    return entry


def answer(req: dict, result: str, voters: list | None = None) -> dict:
    """The guest's answer to ``req``; ``voters`` says who answered what, those that
    decided first (:func:`guestd.votes.ranked`). The first :data:`MAX_VOTERS` are
    listed, ``voters_total`` counts them all, and the answer always fits one frame."""
    voters = voters or []
    return fit_answer({"v": VERSION, "type": ANSWER, "id": req["id"],
                       "instance": req["instance"], "phase": req["phase"], "result": result,
                       "voters": voters[:MAX_VOTERS], "voters_total": len(voters)})


# Ends a reason cut to fit the frame.
CUT = "…"


def fit_answer(message: dict) -> dict:
    """``message``, an answer of at most :data:`MAX_VOTERS` voters, with reasons cut so
    that it encodes in one frame: every reason longer than one length, the longest that
    fits, is cut to it and ends with :data:`CUT`. Names, votes and the result are never
    touched; they fit on their own (64 names of 64 characters escaped as ``\\uXXXX``
    are 25 KB, and 64 offline lists of :data:`MAX_OFFERED` four-digit vCPUs 6 KB)."""
    def cut(limit: int) -> dict:
        return {**message, "voters": [
            {**entry, "reason": entry["reason"][:limit] + CUT}
            if len(entry["reason"]) > limit else entry for entry in message["voters"]]}

    def fits(candidate: dict) -> bool:
        return len(compact(candidate)) < MAX_FRAME

    if fits(message):
        return message
    # The size grows with the limit, except by a byte or so where a reason stops
    # being cut: the search still ends on a limit that fits, if not always the longest.
    low, high = 0, max((len(entry["reason"]) for entry in message["voters"]), default=0) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if fits(cut(middle)):
            low = middle
        else:
            high = middle - 1
    return cut(low)


def parse_answer(message: dict, rid: str, instance: str) -> dict:
    """Validate an answer from an untrusted guest against the request it must answer.

    An answer for another request id or another instance is refused: a guest
    can never vote on anything but what it was asked. Every voter listed is kept and
    checked, past :data:`MAX_VOTERS` too (an older guestd listed them all): an answer
    is never refused for its length, which would turn a rejection into whatever the
    host does with a guest it cannot ask. ``voters_total`` is at least the voters listed.
    """
    if message.get("type") != ANSWER:
        raise ProtocolError(f"expected an {ANSWER}, got {message.get('type')!r}")
    if message.get("id") != rid or message.get("instance") != instance:
        raise ProtocolError("answer is not for this request or this instance")
    result = message.get("result")
    if result not in RESULTS:
        raise ProtocolError(f"unknown result {result!r}")
    voters = message.get("voters") or []
    if not isinstance(voters, list):
        raise ProtocolError("voters must be a list")
    clean = []
    for entry in voters:
        if not isinstance(entry, dict) or entry.get("vote") not in BALLOTS:
            raise ProtocolError("each voter needs a name and a known vote")
        clean.append(voter(_text(entry.get("name"), "voter name", MAX_NAME), entry["vote"],
                           _text(entry.get("reason"), "reason", MAX_REASON, required=False),
                           parse_offline(entry.get("offline", []))))
    total = message.get("voters_total", len(clean))
    if isinstance(total, bool) or not isinstance(total, int) or total < len(clean):
        raise ProtocolError(f"voters_total {total!r:.40} is not a count of at least the "
                            f"{len(clean)} voters listed")
    return {"v": VERSION, "type": ANSWER, "id": rid, "instance": instance,
            "phase": message.get("phase"), "result": result, "voters": clean,
            "voters_total": total}


def register(name: str, events: list) -> dict:
    return {"v": VERSION, "type": REGISTER, "name": name, "events": list(events)}


def parse_register(message: dict) -> tuple:
    name = _text(message.get("name"), "name", MAX_NAME)
    events = message.get("events") or ["*"]
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ProtocolError("events must be a list of event names")
    return name, frozenset(events)


def notice(req: dict) -> dict:
    """The notice guestd hands an application for one request."""
    return {"v": VERSION, "type": NOTICE, **{k: req[k] for k in (
        "id", "instance", "event", "phase", "timeout", "details")}}


def ballot(nid: str, vote: str, reason: str = "") -> dict:
    return {"v": VERSION, "type": BALLOT, "id": nid, "vote": vote, "reason": reason[:MAX_REASON]}


def parse_ballot(message: dict) -> tuple:
    """An application's vote: (notice id, accept|reject, reason)."""
    vote = message.get("vote")
    if vote not in (ACCEPT, REJECT):
        raise ProtocolError("vote must be accept or reject")
    return (_text(message.get("id"), "id", MAX_NAME), vote,
            _text(message.get("reason"), "reason", MAX_REASON, required=False))


def done(nid: str, offline: tuple = ()) -> dict:
    """An application handled notice ``nid``; to a prepare it may add the vCPUs it
    offers to take offline (:func:`parse_offline`), listed only when there are some."""
    message = {"v": VERSION, "type": DONE, "id": nid}
    if offline:
        message["offline"] = list(offline)
    return message


def parse_done(message: dict) -> tuple:
    """An application's done: (notice id, the vCPUs it offers to take offline)."""
    return (_text(message.get("id"), "id", MAX_NAME),
            parse_offline(message.get("offline", [])))


def failure(message: str) -> dict:
    return {"v": VERSION, "type": FAILURE, "message": message[:MAX_REASON]}


def health(healthy: bool, reason: str = "", action: str = LOG_ONLY) -> dict:
    """An application's health report; ``action`` is what it asks for when unhealthy."""
    return {"v": VERSION, "type": HEALTH, "healthy": bool(healthy),
            "reason": reason[:MAX_REASON], "action": action}


def parse_health(message: dict) -> tuple:
    """(healthy, reason, action) from an application's health report."""
    healthy = message.get("healthy")
    if not isinstance(healthy, bool):
        raise ProtocolError("healthy must be true or false")
    action = message.get("action") or LOG_ONLY
    if action not in ACTIONS:
        raise ProtocolError(f"action must be one of {', '.join(ACTIONS)}")
    return healthy, _text(message.get("reason"), "reason", MAX_REASON, required=False), action


def app_health(name: str, healthy: bool, reason: str = "", action: str = LOG_ONLY) -> dict:
    return {"name": name[:MAX_NAME], "healthy": healthy, "reason": reason[:MAX_REASON],
            "action": action}


def status(seq: int, interval: float, apps: list) -> dict:
    """guestd's status file: ``seq`` advances every ``interval`` seconds while guestd
    is alive; ``apps`` is each reporting application's last :func:`app_health`."""
    return {"v": VERSION, "type": STATUS, "seq": seq, "interval": interval,
            "apps": apps[:MAX_APPS]}


def parse_status(data: bytes) -> dict:
    """Validate a status file read from an untrusted guest (at most MAX_FRAME bytes)."""
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"status file exceeds {MAX_FRAME} bytes")
    message = decode(data)
    if message.get("type") != STATUS:
        raise ProtocolError(f"expected a {STATUS}, got {message.get('type')!r}")
    seq = message.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ProtocolError("seq must be a non-negative integer")
    interval = message.get("interval")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
            or not 0 < interval <= 3600:
        raise ProtocolError("interval must be a number of seconds in (0, 3600]")
    apps = message.get("apps") or []
    if not isinstance(apps, list) or len(apps) > MAX_APPS:
        raise ProtocolError(f"apps must be a list of at most {MAX_APPS}")
    clean = []
    for entry in apps:
        if not isinstance(entry, dict):
            raise ProtocolError("each app must be an object")
        healthy, reason, action = parse_health(entry)
        clean.append(app_health(_text(entry.get("name"), "app name", MAX_NAME), healthy,
                                reason, action))
    return status(seq, float(interval), clean)
