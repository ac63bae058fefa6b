"""The server-group messaging wire contract: guestd's outbox file, the receipts and
messages the host sends through the spool, and the socket messages of applications.

One module owns these shapes and the limits both sides enforce (``docs/group-
messaging.md``); the host (``novaproxy/groups.py``) imports it, as it imports
:mod:`guestd.protocol`, and treats everything a guest wrote as untrusted: every parser
here checks types and bounds, and raises :class:`ProtocolError` (:class:`Refused`, with
a reason word an application can act on, for what guestd refuses itself).

Standard library only, and ``json`` only when a body is measured: guestd runs in
guest images, and :mod:`guestd.protocol`'s lean import for guestd-ctl is untouched.
"""

from __future__ import annotations

from guestd.framing import ProtocolError, compact, decode
from guestd.protocol import ACCEPT, FAILURE, MAX_NAME, MAX_REASON, REJECT, VERSION
from guestd.protocol import GROUP as GROUP  # re-exported: the request vocabulary
from guestd.protocol import MESSAGE as MESSAGE
from guestd.protocol import RECEIPT as RECEIPT
from guestd.protocol import REPORT as REPORT

# Where guestd keeps its outbox unless told otherwise (guestd --outbox), as the host's
# configuration defaults to as well.
DEFAULT_OUTBOX = "/run/guestd/outbox.json"
MAX_BODY = 4096  # bytes of a body's compact JSON encoding
MAX_OUTBOX = 32  # messages waiting in one outbox
MAX_OUTBOX_BYTES = 256 * 1024  # an outbox file read by the host; larger is invalid
MAX_RESULTS = 64  # results in one receipt

# Outbox entry kinds, and who a message goes to.
KIND_MESSAGE, KIND_STATUS = "message", "status"
BROADCAST = "*"
# A result's status: the host took the entry or refused it; then, for an accepted
# message, its final report: every recipient had it, or some did not before it expired.
ACCEPTED, REFUSED = "accepted", "refused"
DELIVERED, EXPIRED = "delivered", "expired"  # also a report's states, per member
PENDING = "pending"
# And the refusals guestd decides itself.
TOO_LARGE, OUTBOX_FULL, INVALID, DISABLED = "too-large", "outbox-full", "invalid", "disabled"

# Socket message types: application -> guestd, then guestd -> application.
GROUP_SEND, GROUP_STATUS = "group-send", "group-status"
GROUP_QUEUED, GROUP_MESSAGE, GROUP_RESULT = "group-queued", "group-message", "group-result"

_HEX = frozenset("0123456789abcdef")


class Refused(ProtocolError):
    """What guestd refuses an application at once; ``reason`` is a word of the contract."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _count(value: object, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**53:
        raise ProtocolError(f"{field} must be an integer of at least {minimum}")
    return value


def _word(value: object, field: str, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise ProtocolError(f"{field} must be a string of 1 to {limit} characters")
    return value


def epoch_of(value: object) -> str:
    """``value`` if it is an outbox epoch: 16 lower-case hex characters."""
    if not (isinstance(value, str) and len(value) == 16 and set(value) <= _HEX):
        raise ProtocolError(f"epoch {value!r:.40} is not 16 hex characters")
    return value


def member(value: object, field: str = "member") -> str:
    """``value`` if it is a Nova UUID (canonical form), in lower case."""
    text = value.lower() if isinstance(value, str) else ""
    if [len(p) for p in text.split("-")] != [8, 4, 4, 4, 12] or not set(text) - {"-"} <= _HEX:
        raise ProtocolError(f"{field} {value!r:.60} is not a Nova UUID")
    return text


def recipient(value: object) -> str:
    """``"*"`` (every other member) or one member's Nova UUID."""
    return BROADCAST if value == BROADCAST else member(value, "to")


def body_size(body: object) -> int:
    """Bytes of ``body``'s compact JSON encoding; ProtocolError if it is not JSON."""
    import json

    try:
        return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode(errors="replace"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"body is not a JSON value: {exc}") from None


def check_body(body: object) -> object:
    """``body`` if it is JSON of at most :data:`MAX_BODY` bytes, else :class:`Refused`."""
    size = body_size(body)
    if size > MAX_BODY:
        raise Refused(TOO_LARGE, f"body of {size} bytes exceeds {MAX_BODY}")
    return body


# The outbox (guest -> host).

def message_entry(seq: int, app: str, to: str, body: object) -> dict:
    return {"seq": seq, "kind": KIND_MESSAGE, "to": to, "app": app, "body": body}


def status_entry(seq: int, app: str) -> dict:
    return {"seq": seq, "kind": KIND_STATUS, "app": app}


def outbox(epoch: str, entries: list) -> bytes:
    """The outbox file's contents: ``entries`` (:func:`message_entry`, :func:`status_entry`)."""
    return compact({"v": VERSION, "epoch": epoch, "messages": list(entries)}) + b"\n"


def _entry(item: object) -> dict:
    if not isinstance(item, dict):
        raise ProtocolError("each outbox entry must be an object")
    seq, app = _count(item.get("seq"), "seq"), _word(item.get("app"), "app")
    kind = item.get("kind")
    if kind == KIND_STATUS:
        return status_entry(seq, app)
    if kind != KIND_MESSAGE:
        raise ProtocolError(f"unknown outbox entry kind {kind!r:.40}")
    if "body" not in item:
        raise ProtocolError("a message needs a body")
    return message_entry(seq, app, recipient(item.get("to")), check_body(item["body"]))


def parse_outbox(data: bytes) -> dict:
    """Validate an outbox file read from an untrusted guest: at most
    :data:`MAX_OUTBOX_BYTES` and :data:`MAX_OUTBOX` entries, each schema-checked,
    ``seq`` strictly increasing. Unknown fields are dropped."""
    if len(data) > MAX_OUTBOX_BYTES:
        raise ProtocolError(f"outbox of {len(data)} bytes exceeds {MAX_OUTBOX_BYTES}")
    message = decode(data)
    entries = message.get("messages")
    if not isinstance(entries, list) or len(entries) > MAX_OUTBOX:
        raise ProtocolError(f"messages must be a list of at most {MAX_OUTBOX}")
    clean: list = []
    for item in entries:
        entry = _entry(item)
        if clean and entry["seq"] <= clean[-1]["seq"]:
            raise ProtocolError(f"seq {entry['seq']} after {clean[-1]['seq']}: not increasing")
        clean.append(entry)
    return {"v": VERSION, "epoch": epoch_of(message.get("epoch")), "messages": clean}


# Receipts (host -> the sender's guestd): a RECEIPT request's details.

def result(seq: int, status: str, reason: str = "", **extra: object) -> dict:
    """One outbox entry's outcome: ``accepted`` (``message`` and ``members``, or ``group``
    for a status entry) or ``refused`` with a ``reason``."""
    return {"seq": seq, "status": status, "reason": reason[:MAX_REASON], **extra}


def receipt(epoch: str, acked: int, results: list) -> dict:
    return {"epoch": epoch, "acked": acked, "results": list(results)}


def parse_receipt(details: dict) -> dict:
    """A RECEIPT request's details, checked; each result keeps its other fields."""
    results = details.get("results") or []
    if not isinstance(results, list) or len(results) > MAX_RESULTS:
        raise ProtocolError(f"results must be a list of at most {MAX_RESULTS}")
    clean = []
    for item in results:
        if not isinstance(item, dict) or item.get("status") not in (ACCEPTED, REFUSED):
            raise ProtocolError("each result needs a seq and a status accepted or refused")
        reason = item.get("reason") or ""
        if not isinstance(reason, str):
            raise ProtocolError("a result's reason must be a string")
        extra = {k: v for k, v in item.items() if k not in ("seq", "status", "reason")}
        clean.append(result(_count(item.get("seq"), "seq"), item["status"], reason, **extra))
    return receipt(epoch_of(details.get("epoch")), _count(details.get("acked"), "acked", 0),
                   clean)


# Final reports (host -> the sender's guestd): a REPORT request's details, once no
# recipient of an accepted message is pending any more.

def report_details(message_id: str, group: str, members: dict) -> dict:
    return {"message": message_id, "group": group, "members": dict(members)}


def parse_report_details(details: dict) -> dict:
    """A REPORT request's details, checked: every member delivered or expired."""
    members = details.get("members")
    if not isinstance(members, dict) or len(members) > MAX_RESULTS:
        raise ProtocolError(f"members must map at most {MAX_RESULTS} members to a state")
    clean = {}
    for uuid, state in members.items():
        if state not in (DELIVERED, EXPIRED):
            raise ProtocolError("a final report's states are delivered or expired")
        clean[member(uuid)] = state
    return report_details(_word(details.get("message"), "message"),
                          _word(details.get("group"), "group"), clean)


def final_result(seq: int, report: dict) -> dict:
    """The second :func:`result` of an accepted message: ``delivered`` when every
    recipient had it, else ``expired`` (the report says who did not)."""
    missed = sorted(m for m, state in report["members"].items() if state == EXPIRED)
    if not missed:
        return result(seq, DELIVERED, message=report["message"], members=report["members"])
    return result(seq, EXPIRED, f"not delivered to {len(missed)} member(s) before it expired",
                  message=report["message"], members=report["members"])


# Delivery (host -> a recipient's guestd): a MESSAGE request's details.

MESSAGE_FIELDS = ("id", "from", "group", "to", "epoch", "seq", "body", "sent_at", "expires")


def message_details(mid: str, sender: str, group: str, to: str, epoch: str, seq: int,
                    body: object, sent_at: float, expires: float) -> dict:
    return {"id": mid, "from": sender, "group": group, "to": to, "epoch": epoch, "seq": seq,
            "body": body, "sent_at": sent_at, "expires": expires}


def delivered(result: str, voters: list) -> bool:
    """Whether guestd's answer to a MESSAGE means it has the message: ``accept`` naming
    who took it, or ``reject`` (handed out already, under another request id). An
    ``accept`` naming nobody says nothing in the guest takes group messages yet (early
    in a boot): the host keeps the message queued and delivers it again, until it
    expires, and guestd does not remember that request id."""
    return result == REJECT or (result == ACCEPT and bool(voters))


def _time(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ProtocolError(f"{field} must be a time in seconds")
    return float(value)


def parse_message_details(details: dict) -> dict:
    """A MESSAGE request's details, checked."""
    if "body" not in details:
        raise ProtocolError("a message needs a body")
    return message_details(
        _word(details.get("id"), "id"), member(details.get("from"), "from"),
        _word(details.get("group"), "group"), recipient(details.get("to")),
        epoch_of(details.get("epoch")), _count(details.get("seq"), "seq"),
        details["body"], _time(details.get("sent_at"), "sent_at"),
        _time(details.get("expires"), "expires"))


# The socket: applications <-> guestd. ``ref`` (the application's own token, echoed)
# tells which request a group-queued or an error answers.

def group_send(to: str, body: object, ref: str = "") -> dict:
    return {"v": VERSION, "type": GROUP_SEND, "to": to, "body": body, "ref": ref}


def group_status(ref: str = "") -> dict:
    return {"v": VERSION, "type": GROUP_STATUS, "ref": ref}


def parse_ref(message: dict) -> str:
    ref = message.get("ref") or ""
    return ref[:MAX_NAME] if isinstance(ref, str) else ""


def parse_group_send(message: dict) -> tuple:
    """(to, body) of an application's group-send; :class:`Refused` when too large."""
    if "body" not in message:
        raise ProtocolError("group-send needs a body")
    return recipient(message.get("to")), check_body(message["body"])


def group_queued(seq: int, ref: str = "") -> dict:
    return {"v": VERSION, "type": GROUP_QUEUED, "seq": seq, "ref": ref}


def group_refused(reason: str, text: str, ref: str = "") -> dict:
    """guestd's ``error`` answer to a group-send or group-status it would not queue."""
    return {"v": VERSION, "type": FAILURE, "message": text[:MAX_REASON], "reason": reason,
            "ref": ref}


def group_message(details: dict) -> dict:
    """What an application (or a group hook, on stdin) gets of a delivered message."""
    return {"v": VERSION, "type": GROUP_MESSAGE, **{k: details[k] for k in (
        "id", "from", "group", "to", "seq", "body", "sent_at")}}


def group_result(entry: dict) -> dict:
    """What the application that queued an entry gets of its :func:`result`."""
    return {"v": VERSION, "type": GROUP_RESULT, **entry}
