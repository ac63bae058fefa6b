"""Take the entries read from one guest's outbox: check each, queue the accepted ones in
their recipients' inboxes, and say what became of each (the receipt's results).

The sender is the instance whose channel the outbox was read from, never a field
of the entry; recipients are the other members of its server group that take
messages (:func:`novaproxy.groups.recipients`). Every refusal has a reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Callable

import redis

from guestd import group_protocol as gp
from novaproxy import groups, redis_schema
from novaproxy.agent.membership import Membership
from novaproxy.agent.nova import NovaError

LOG = logging.getLogger("novaproxy.agent.group_send")


class Sender:
    """Checks and queues outbox entries; ``redis_now``: Redis's clock (messages expire on it)."""

    def __init__(self, client: redis.Redis, membership: Membership,
                 redis_now: Callable[[], float]) -> None:
        self._redis = client
        self._membership = membership
        self._redis_now = redis_now

    def take(self, sender: str, epoch: str, entries: list) -> list:
        """The result of each entry, in order (raises NovaError when Nova cannot say who
        is in the group: nothing is taken then, the next poll tries again)."""
        member = self._membership.member(sender)
        group = self._membership.group(member.group) if member.group else None
        refusal = groups.sender_refusal(member, group)
        if refusal == groups.NOT_IN_GROUP and group is not None:
            group = self._membership.group(group.gid, fresh=True)  # the cache is older
            refusal = groups.sender_refusal(member, group)
        if refusal:
            return [groups.refused(e["seq"], refusal) for e in entries]
        peers = self._membership.peers(group)
        return [self._one(sender, epoch, entry, group, peers) for entry in entries]

    def _one(self, sender: str, epoch: str, entry: dict, group: groups.Group,
             peers: dict) -> dict:
        seq = entry["seq"]
        if entry["kind"] == gp.KIND_STATUS:
            return gp.result(seq, gp.ACCEPTED, group=groups.group_status(
                group, peers, self._monitor_states(group)))
        to, refusal = groups.recipients(sender, entry["to"], group, peers)
        if refusal == groups.NOT_A_MEMBER and entry["to"] != sender:
            to, refusal = self._joined(sender, entry["to"], group, peers)
        if refusal:
            return groups.refused(seq, refusal)
        now = self._redis_now()
        if redis_schema.take_tokens(self._redis, group.gid, sender, now) != \
                redis_schema.RATE_OK:
            return groups.refused(seq, groups.RATE_LIMITED)
        message_id = uuid.uuid4().hex
        expires = now + groups.MESSAGE_TTL
        fields = {"id": message_id, "from": sender, "group": group.gid, "to": entry["to"],
                  "epoch": epoch, "seq": seq, "body": json.dumps(entry["body"]),
                  "sent_at": repr(now), "expires": repr(expires)}
        redis_schema.open_report(self._redis, group.gid, message_id, to, expires)
        if to:  # its final report is owed to the sender (group_outbox.OutboxPoller)
            redis_schema.track_report(self._redis, sender, group.gid, message_id, expires)
        redis_schema.note_sent(self._redis, group.gid, message_id, sender, entry["to"],
                               gp.body_size(entry["body"]), now)
        for recipient in to:
            redis_schema.append_message(self._redis, recipient, fields)
        LOG.debug("instance %s: message %s (seq %d) queued for %d member(s)", sender,
                  message_id, seq, len(to))
        return gp.result(seq, gp.ACCEPTED, message=message_id,
                         members={m: groups.PENDING for m in to})

    def _joined(self, sender: str, to: str, group: groups.Group, peers: dict) -> tuple:
        """:func:`groups.recipients` for a ``to`` the cached group does not hold, once Nova
        was asked whether it joined since (it cannot say: not a member)."""
        try:
            fresh = self._membership.group(group.gid, fresh=True)
            if fresh is None or to not in fresh.members:
                return [], groups.NOT_A_MEMBER
            peers = {**peers, to: self._membership.member(to)}
        except NovaError as exc:
            LOG.warning("group %s: cannot ask Nova whether %s joined: %s", group.gid, to, exc)
            return [], groups.NOT_A_MEMBER
        return groups.recipients(sender, to, fresh, peers)

    def _monitor_states(self, group: groups.Group) -> dict:
        states = {}
        for instance in group.members:
            state = redis_schema.monitor_view(self._redis, instance).get("state")
            if state:
                states[instance] = state
        return states
