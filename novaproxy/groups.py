"""Server-group messaging, the host's decisions (pure): its limits and refusal reasons,
who receives a message, what is taken from an outbox, and what goes back to the guests.

``docs/group-messaging.md`` is the contract; its wire shapes and the limits both sides
enforce (the outbox, receipts, deliveries) are :mod:`guestd.group_protocol`'s. The
agent reads a guest's outbox (:mod:`novaproxy.agent.group_outbox`), decides here, and
keeps what it decided in Redis (:mod:`novaproxy.redis_schema.groups`). The host, never
the guest, names the sender (the channel the outbox was read from) and the recipients
(the members of the sender's Nova server group whose flavor turns messaging on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from guestd import group_protocol as gp
from guestd import protocol
from novaproxy import flavor

# -- limits the host decides (the README states them with group_protocol's MAX_BODY,
# MAX_OUTBOX and MAX_OUTBOX_BYTES) ----------------------------------------------------------
MAX_TAKEN = 16  # messages taken per poll of one outbox
SENDER_RATE, SENDER_BURST = 10.0, 20  # messages/s per sender, token bucket
GROUP_RATE, GROUP_BURST = 50.0, 100  # messages/s per group
MAX_GROUP = 16  # members
QUEUE_MAX = 256  # messages queued per recipient; the oldest are dropped
MESSAGE_TTL = 60  # seconds a message waits for its recipient
POLL_INTERVAL = 0.5  # seconds between reads of one outbox

# The outcomes of a receipt request that mean guestd had it (of a message request:
# guestd.group_protocol.delivered).
ANSWERED = (protocol.ACCEPT, protocol.REJECT)

# -- the refusals the host decides (guestd's own are group_protocol's) -----------------------
RATE_LIMITED = "rate-limited"
NOT_IN_GROUP = "not-in-group"  # the sender is in no server group
NOT_ENABLED = "not-enabled"  # the sender's flavor does not turn messaging on, or opted out
GROUP_TOO_LARGE = "group-too-large"
NOT_A_MEMBER = "not-a-member"  # ``to`` names no other member of the sender's group
PEER_GONE = "peer-gone"  # ``to`` is a member Nova no longer knows
PEER_NOT_ENABLED = "peer-not-enabled"  # ``to`` is a member that does not take messages
# A delivery report's states, per member.
PENDING, DELIVERED, EXPIRED = gp.PENDING, gp.DELIVERED, gp.EXPIRED

# Room kept in a receipt request's frame for everything but the results: the request's
# envelope (id, instance, event...) and the receipt's epoch and acked.
_ENVELOPE = 512


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
    if to == gp.BROADCAST:
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


def refused(seq: int, reason: str) -> dict:
    return gp.result(seq, gp.REFUSED, reason)


# -- the outbox (parsed with guestd.group_protocol.parse_outbox: a body over MAX_BODY,
# which guestd refuses at send time, makes the whole outbox invalid, as any other lie) ------


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
    a group request's details (:data:`guestd.protocol.MAX_GROUP_DETAILS`, one frame),
    each acknowledging up to its last result's seq. ``MAX_TAKEN`` results usually fit
    one; sixteen status answers naming sixteen members on long host names do not."""
    limit = protocol.MAX_GROUP_DETAILS - _ENVELOPE
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
    return [gp.receipt(epoch, c[-1]["seq"], c) for c in out]


def receipt_request(instance: str, details: dict, timeout: float) -> dict:
    """The spool request acknowledging what the host took from ``instance``'s outbox."""
    rid = f"rcpt-{details['epoch']}-{details['acked']}"
    return protocol.request(rid, instance, gp.GROUP, gp.RECEIPT, timeout, details)


def final_report(states: dict) -> dict | None:
    """A sent message's final report (member -> delivered or expired), from its report
    as :func:`redis_schema.report` reads it; None while a recipient is still pending."""
    if any(state == PENDING for state in states.values()):
        return None
    return {m: s for m, s in states.items() if s in (DELIVERED, EXPIRED)}


def report_request(instance: str, gid: str, message_id: str, members: dict,
                   timeout: float) -> dict:
    """The spool request telling ``instance`` (the sender) how its message ended."""
    return protocol.request(f"rpt-{message_id}", instance, gp.GROUP, gp.REPORT, timeout,
                            gp.report_details(message_id, gid, members))


def message_request(instance: str, fields: dict, body: object, timeout: float) -> dict:
    """The spool request handing one inbox message (its stored ``fields``) to ``instance``."""
    details = gp.message_details(
        fields["id"], fields["from"], fields["group"], fields["to"], fields["epoch"],
        int(fields["seq"]), body, float(fields["sent_at"]), float(fields["expires"]))
    return protocol.request(f"msg-{fields['id']}", instance, gp.GROUP, gp.MESSAGE, timeout,
                            details)
