"""Server-group messaging, the host's decisions (pure): the limits, the refusal reasons,
who receives a message, what a guest's outbox may hold, and what goes back to it.

``docs/group-messaging.md`` is the contract. The agent reads a guest's outbox
(:mod:`novaproxy.agent.group_outbox`), decides here, and keeps what it decided in
Redis (:mod:`novaproxy.redis_schema.groups`). The host, never the guest, names the
sender (the channel the outbox was read from) and the recipients (the members of the
sender's Nova server group whose flavor turns messaging on).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from guestd import protocol
from guestd.framing import ProtocolError, compact
from novaproxy import flavor

# -- limits (the README states them) ---------------------------------------------------
# guestd owns the wire sizes and refuses above them itself; the host checks again,
# since whatever a guest writes is untrusted.
MAX_BODY = 4096  # bytes of a body's compact JSON encoding
MAX_OUTBOX = 32  # messages waiting in a guest's outbox
MAX_TAKEN = 16  # messages taken per poll of one outbox
MAX_OUTBOX_BYTES = 256 * 1024  # read of the outbox file; a larger one is invalid
SENDER_RATE, SENDER_BURST = 10.0, 20  # messages/s per sender, token bucket
GROUP_RATE, GROUP_BURST = 50.0, 100  # messages/s per group
MAX_GROUP = 16  # members
QUEUE_MAX = 256  # messages queued per recipient; the oldest are dropped
MESSAGE_TTL = 60  # seconds a message waits for its recipient
POLL_INTERVAL = 0.5  # seconds between reads of one outbox

# -- the spool requests (guestd.protocol owns the phase names) ----------------------------
EVENT = "group"
RECEIPT = "receipt"
MESSAGE = "message"
# The outcomes of a receipt or message request that mean guestd had it.
ANSWERED = (protocol.ACCEPT, protocol.REJECT)
# guestd's outbox in the guest (its default; the agent's ``outbox_file`` setting).
DEFAULT_OUTBOX = "/run/guestd/outbox.json"

# -- outbox entries and results ----------------------------------------------------------
KIND_MESSAGE, KIND_STATUS = "message", "status"
BROADCAST = "*"
ACCEPTED, REFUSED = "accepted", "refused"
TOO_LARGE = "too-large"
OUTBOX_FULL = "outbox-full"
RATE_LIMITED = "rate-limited"
NOT_IN_GROUP = "not-in-group"  # the sender is in no server group
NOT_ENABLED = "not-enabled"  # the sender's flavor does not turn messaging on, or opted out
GROUP_TOO_LARGE = "group-too-large"
NOT_A_MEMBER = "not-a-member"  # ``to`` names no other member of the sender's group
PEER_GONE = "peer-gone"  # ``to`` is a member Nova no longer knows
PEER_NOT_ENABLED = "peer-not-enabled"  # ``to`` is a member that does not take messages
# A delivery report's states, per member.
PENDING, DELIVERED, EXPIRED = "pending", "delivered", "expired"

_EPOCH = re.compile(r"[0-9a-f]{16}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Room kept in a request's details for everything but the results.
_DETAILS_MARGIN = 256


@dataclass(frozen=True)
class Member:
    """What the host knows of one group member: Nova's view of it."""

    instance: str
    known: bool  # Nova knows the server
    messaging: bool = False  # its flavor turns messaging on and it did not opt out
    status: str = ""
    host: str = ""
    group: str = ""  # its server group's id, "" for none
    name: str = ""  # its Nova server name (told to its peers in notices)


@dataclass(frozen=True)
class Group:
    """One Nova server group, as ``GET /os-server-groups/{id}`` gives it."""

    gid: str
    name: str
    policy: str
    members: tuple


def messaging_on(server: dict) -> bool:
    """The server's flavor turns messaging on and its metadata does not opt it out."""
    specs = (server.get("flavor") or {}).get("extra_specs") or {}
    return (flavor.enabled(specs, flavor.GROUP_MESSAGING)
            and not flavor.messaging_opted_out(server.get("metadata") or {}))


def member_from(instance: str, server: dict | None, groups: list) -> Member:
    """The member for Nova's ``server`` (None: Nova does not know it) in ``groups``."""
    if server is None:
        return Member(instance, known=False)
    return Member(instance, known=True, messaging=messaging_on(server),
                  status=str(server.get("status", "")),
                  host=str(server.get("OS-EXT-SRV-ATTR:host") or ""),
                  group=groups[0] if groups else "", name=str(server.get("name") or ""))


def sender_refusal(sender: Member, group: Group | None) -> str:
    """Why ``sender`` may send nothing at all ("" if it may)."""
    if not sender.known or not sender.messaging:
        return NOT_ENABLED
    if group is None or sender.instance not in group.members:
        return NOT_IN_GROUP
    if len(group.members) > MAX_GROUP:
        return GROUP_TOO_LARGE
    return ""


def recipients(sender: str, to: str, group: Group, peers: dict) -> tuple:
    """``(recipients, refusal)`` of a message from ``sender`` to ``to`` ("*" or a member):
    the other members that take messages; ``peers`` maps each member to its
    :class:`Member`. A broadcast reaches whoever takes messages, perhaps nobody."""
    others = [m for m in group.members if m != sender]
    if to == BROADCAST:
        return [m for m in others if peers.get(m) is not None and peers[m].messaging], ""
    if to not in others:
        return [], NOT_A_MEMBER
    peer = peers.get(to)
    if peer is None or not peer.known:
        return [], PEER_GONE
    if not peer.messaging:
        return [], PEER_NOT_ENABLED
    return [to], ""


def group_status(group: Group, peers: dict, monitor_states: dict) -> dict:
    """The answer to a ``status`` entry: each member's Nova status, host, monitor state."""
    members = {}
    for m in group.members:
        peer = peers.get(m) or Member(m, known=False)
        members[m] = {"status": peer.status if peer.known else "DELETED", "host": peer.host,
                      "monitor": monitor_states.get(m, ""), "messaging": peer.messaging}
    return {"group": group.gid, "name": group.name, "policy": group.policy,
            "members": members}


def body_too_large(body: object) -> bool:
    return len(compact(body)) > MAX_BODY


def refused(seq: int, reason: str) -> dict:
    return {"seq": seq, "status": REFUSED, "reason": reason}


# -- the outbox -----------------------------------------------------------------------------


def parse_outbox(data: bytes) -> dict:
    """A guest's outbox, validated as the hostile input it is (raises ProtocolError):
    ``{"v": 1, "epoch": <16 hex>, "messages": [...]}``, at most :data:`MAX_OUTBOX`
    entries, each schema-checked, ``seq`` strictly increasing. Body sizes are checked
    per entry by the caller (a refusal, not an unreadable outbox)."""
    if len(data) > MAX_OUTBOX_BYTES:
        raise ProtocolError(f"outbox over {MAX_OUTBOX_BYTES} bytes")
    try:
        outbox = protocol.decode(data)
    except RecursionError:  # JSON nested deeper than the parser goes
        raise ProtocolError("outbox nested too deeply") from None
    if outbox.get("v") != protocol.VERSION:
        raise ProtocolError(f"outbox version {outbox.get('v')!r:.20} is not {protocol.VERSION}")
    epoch = outbox.get("epoch")
    if not isinstance(epoch, str) or not _EPOCH.fullmatch(epoch):
        raise ProtocolError("outbox epoch must be 16 hex characters")
    messages = outbox.get("messages")
    if not isinstance(messages, list) or len(messages) > MAX_OUTBOX:
        raise ProtocolError(f"outbox messages must be a list of at most {MAX_OUTBOX}")
    entries, last = [], 0
    for raw in messages:
        entry = _entry(raw)
        if entry["seq"] <= last:
            raise ProtocolError("outbox seq must increase")
        last = entry["seq"]
        entries.append(entry)
    return {"v": protocol.VERSION, "epoch": epoch, "messages": entries}


def _entry(raw: object) -> dict:
    if not isinstance(raw, dict):
        raise ProtocolError("an outbox entry must be an object")
    seq, kind, app = raw.get("seq"), raw.get("kind"), raw.get("app")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < 2 ** 53:
        raise ProtocolError("an outbox entry's seq must be a positive integer")
    if not isinstance(app, str) or not 0 < len(app) <= protocol.MAX_NAME:
        raise ProtocolError(f"an outbox entry's app must be a name of 1 to "
                            f"{protocol.MAX_NAME} characters")
    if kind == KIND_STATUS:
        return {"seq": seq, "kind": kind, "app": app}
    if kind != KIND_MESSAGE:
        raise ProtocolError(f"an outbox entry's kind must be {KIND_MESSAGE} or {KIND_STATUS}")
    to = raw.get("to")
    if not isinstance(to, str) or not (to == BROADCAST or _UUID.fullmatch(to)):
        raise ProtocolError("an outbox entry's to must be '*' or a member's uuid")
    if "body" not in raw:
        raise ProtocolError("an outbox message needs a body")
    return {"seq": seq, "kind": kind, "app": app, "to": to, "body": raw["body"]}


def to_take(outbox: dict, epoch: str, taken: int) -> list:
    """The entries not taken yet (``taken``: the last seq taken in ``epoch``; a new epoch
    starts afresh), at most :data:`MAX_TAKEN`."""
    after = taken if outbox["epoch"] == epoch else 0
    return [e for e in outbox["messages"] if e["seq"] > after][:MAX_TAKEN]


def unacknowledged(outbox: dict, epoch: str, taken: int) -> bool:
    """The outbox still holds entries the host took: their receipt did not arrive."""
    return (outbox["epoch"] == epoch
            and any(e["seq"] <= taken for e in outbox["messages"]))


# -- what goes back to the guests -------------------------------------------------------------


def receipts(epoch: str, results: list) -> list:
    """The details of the receipt requests for ``results`` (in seq order): as few as fit
    a request's details (:data:`guestd.protocol.MAX_DETAILS`), each acknowledging up to
    its last result's seq."""
    limit = protocol.MAX_DETAILS - _DETAILS_MARGIN
    out: list = []
    chunk: list = []
    size = 0
    for result in results:
        length = len(json.dumps(result)) + 2  # measured as guestd measures details
        if chunk and size + length > limit:
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(result)
        size += length
    if chunk:
        out.append(chunk)
    return [{"epoch": epoch, "acked": c[-1]["seq"], "results": c} for c in out]


def receipt_request(instance: str, details: dict, timeout: float) -> dict:
    """The spool request acknowledging what the host took from ``instance``'s outbox."""
    rid = f"rcpt-{details['epoch']}-{details['acked']}"
    return protocol.request(rid, instance, EVENT, RECEIPT, timeout, details)


def message_request(instance: str, fields: dict, body: object, timeout: float) -> dict:
    """The spool request handing one inbox message (its stored ``fields``) to ``instance``."""
    details = {k: fields[k] for k in ("id", "from", "group", "to", "epoch") if k in fields}
    details.update(seq=int(fields["seq"]), sent_at=float(fields["sent_at"]),
                   expires=float(fields["expires"]), body=body)
    return protocol.request(f"msg-{fields['id']}", instance, EVENT, MESSAGE, timeout, details)
