"""Server-group messaging: memberships, inboxes, outbox progress, delivery reports and
rate buckets (``docs/group-messaging.md``).

- ``novaproxy:{<uuid>}:member`` string (JSON): Nova's view of the instance as a group
  member (:class:`novaproxy.groups.Member`) and when it was read (``read_at``); read
  again once ``GROUP_TTL`` old, kept ``MEMBER_TTL``
- ``novaproxy:{group:<gid>}:members`` string (JSON): the server group's name, policy
  and members, cached for ``GROUP_TTL``
- ``novaproxy:{<uuid>}:inbox`` stream: the messages for the instance (fields: ``id``,
  ``from``, ``group``, ``to``, ``epoch``, ``seq``, ``body`` (JSON text), ``sent_at``,
  ``expires``), at most about ``QUEUE_MAX``; it goes away ``INBOX_TTL`` after the last
  message came
- ``novaproxy:{<uuid>}:inbox-pos`` string: the last inbox entry delivered
- ``novaproxy:{agent:<host>}:inbox-wake`` stream: a ``woke`` entry when one of the host's
  deliveries ends, so that the host's blocked inbox read returns and reads that VM's
  inbox again at once (only the last entry is kept)
- ``novaproxy:{<uuid>}:reports`` sorted set: ``<gid> <message id>`` of each message the
  instance sent that has recipients and whose final report it has not had yet, scored by
  the message's ``expires``
- ``novaproxy:{<uuid>}:outbox`` hash: ``epoch``, ``seq`` (the last outbox entry the host
  took) and ``receipts`` (JSON: the receipt details not yet acknowledged by the guest)
- ``novaproxy:{group:<gid>}:report:<message id>`` hash: member -> pending / delivered /
  expired, and ``expires``; a member still pending after ``expires`` reads as expired
- ``novaproxy:{group:<gid>}:sent`` stream: the group's last ``SENT_MAX`` messages for
  operators, never their bodies (fields: ``id``, ``from``, ``to``, ``size``: the body's
  bytes, ``sent_at``); it goes away ``REPORT_TTL`` after the last message was sent
- ``novaproxy:{group:<gid>}:bucket`` and ``...:bucket:<sender uuid>`` hashes: the rate
  limits' token buckets (:data:`scripts.GROUP_RATE`; one hash slot per group)

Times are Redis's (the caller passes ``redis_time``), so agents' clocks never disagree.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import redis

from novaproxy import groups
from novaproxy.groups import Group, Member
from novaproxy.redis_schema import keyspace, scripts
from novaproxy.redis_schema.connection import check_block

GROUP_TTL = 30  # seconds a membership read from Nova is trusted
# A member record is read from Nova again once GROUP_TTL old (its own agent polls it
# twice a second), but kept three times as long: whoever reads the cache alone (the
# proxy's notices, the inbox relay) never finds a served member missing meanwhile.
MEMBER_TTL = 3 * GROUP_TTL
INBOX_TTL = groups.MESSAGE_TTL + 60  # an inbox (and its position) outlives its last message
REPORT_TTL = groups.MESSAGE_TTL + 60
OUTBOX_TTL = 24 * 3600  # what was taken from an outbox is remembered this long
RATE_OK = "ok"
SENT_MAX = 50  # messages a group's operator record keeps


def member_key(instance: str) -> str:
    return keyspace.instance_key(instance, "member")


def group_key(gid: str) -> str:
    return f"{keyspace.PREFIX}:{{group:{gid}}}:members"


def inbox_key(instance: str) -> str:
    return keyspace.instance_key(instance, "inbox")


def inbox_pos_key(instance: str) -> str:
    return keyspace.instance_key(instance, "inbox-pos")


def reports_key(instance: str) -> str:
    return keyspace.instance_key(instance, "reports")


def inbox_wake_key(host: str) -> str:
    return f"{keyspace.PREFIX}:{{agent:{host}}}:inbox-wake"


def wake_inbox_reader(client: redis.Redis, host: str) -> None:
    """End ``host``'s blocked :func:`read_inboxes` now (its relay has a VM to read again)."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(inbox_wake_key(host), {"woke": "1"}, maxlen=1, approximate=False)
    pipe.expire(inbox_wake_key(host), INBOX_TTL)
    pipe.execute()


def outbox_key(instance: str) -> str:
    return keyspace.instance_key(instance, "outbox")


def report_key(gid: str, message_id: str) -> str:
    return f"{keyspace.PREFIX}:{{group:{gid}}}:report:{message_id}"


def sent_key(gid: str) -> str:
    return f"{keyspace.PREFIX}:{{group:{gid}}}:sent"


def group_bucket_key(gid: str) -> str:
    return f"{keyspace.PREFIX}:{{group:{gid}}}:bucket"


def sender_bucket_key(gid: str, sender: str) -> str:
    return f"{group_bucket_key(gid)}:{sender}"


# -- the membership cache ---------------------------------------------------------------------


def cache_member(client: redis.Redis, member: Member, ttl: int = MEMBER_TTL) -> None:
    """Cache ``member`` as read from Nova now (``read_at``: this host's clock)."""
    client.set(member_key(member.instance),
               json.dumps({**asdict(member), "read_at": time.time()}), ex=ttl)


def _member(raw: str | None, max_age: float | None = None) -> Member | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        read_at = float(data.pop("read_at", 0.0))
        if max_age is not None and time.time() - read_at > max_age:
            return None
        return Member(**data)
    except (ValueError, TypeError, AttributeError):
        return None


def cached_member(client: redis.Redis, instance: str,
                  max_age: float | None = None) -> Member | None:
    """The cached member, None when not cached, unreadable or (``max_age``) read from
    Nova longer ago than that: read Nova again."""
    return _member(client.get(member_key(instance)), max_age)


def cached_members(client: redis.Redis, instances: list,
                   max_age: float | None = None) -> dict:
    """instance -> cached :class:`Member` for those cached (one MGET), and read from
    Nova no longer than ``max_age`` ago if given."""
    if not instances:
        return {}
    out = {}
    for instance, raw in zip(instances, client.mget([member_key(i) for i in instances])):
        member = _member(raw, max_age)
        if member is not None:
            out[instance] = member
    return out


def all_members(client: redis.Redis) -> dict:
    """instance -> cached :class:`Member`, for every member cached (a SCAN: operators)."""
    return cached_members(client, [keyspace.instance_of(k)
                                   for k in keyspace.scan(client, "member")])


def cache_group(client: redis.Redis, group: Group, ttl: int = GROUP_TTL) -> None:
    client.set(group_key(group.gid), json.dumps(
        {"name": group.name, "policy": group.policy, "members": list(group.members)}), ex=ttl)


def cached_group(client: redis.Redis, gid: str) -> Group | None:
    raw = client.get(group_key(gid))
    try:
        data = json.loads(raw) if raw else None
        return Group(gid, data["name"], data["policy"], tuple(data["members"])) if data else None
    except (ValueError, TypeError, KeyError):
        return None


def cached_group_ids(client: redis.Redis) -> list:
    """The ids of the groups cached now (a SCAN: for operators)."""
    head, tail = group_key("*").split("*")
    return sorted(k[len(head):-len(tail)] for k in client.scan_iter(match=group_key("*"),
                                                                     count=1000))


# -- inboxes ------------------------------------------------------------------------------------


def append_message(client: redis.Redis, instance: str, fields: dict,
                   maxlen: int = groups.QUEUE_MAX) -> str:
    """Queue a message for ``instance``; the oldest go once about ``maxlen`` are queued.
    Returns the entry id."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(inbox_key(instance), fields, maxlen=maxlen, approximate=True)
    pipe.expire(inbox_key(instance), INBOX_TTL)
    return pipe.execute()[0]


def inbox_positions(client: redis.Redis, instances: list) -> dict:
    """instance -> the last entry delivered ("0-0": none yet)."""
    if not instances:
        return {}
    raw = client.mget([inbox_pos_key(i) for i in instances])
    return {i: p or "0-0" for i, p in zip(instances, raw)}


def set_inbox_position(client: redis.Redis, instance: str, entry_id: str) -> None:
    client.set(inbox_pos_key(instance), entry_id, ex=INBOX_TTL)


def read_inboxes(client: redis.Redis, positions: dict, block_ms: int | None,
                 count: int, host: str | None = None) -> dict:
    """instance -> ``[(entry_id, fields)]`` after each position, at most ``count`` each;
    waits up to ``block_ms`` for one (None: no wait), or until :func:`wake_inbox_reader`
    for ``host``."""
    if not positions:
        return {}
    check_block(client, block_ms)
    streams = {inbox_key(i): p for i, p in positions.items()}
    wake = inbox_wake_key(host) if host is not None else None
    if wake is not None:
        streams[wake] = "$"  # only an entry added while this read waits
    answer = client.xread(streams, count=count, block=block_ms) or []
    return {keyspace.instance_of(key): entries for key, entries in answer
            if entries and key != wake}


# -- outbox progress ------------------------------------------------------------------------


def outbox_progress(client: redis.Redis, instance: str) -> tuple:
    """``(epoch, seq, receipts)``: the last outbox entry taken, and the receipts the
    guest has not acknowledged yet (``("", 0, [])`` for none)."""
    raw = client.hgetall(outbox_key(instance))
    try:
        return (raw.get("epoch", ""), int(raw.get("seq", 0)),
                json.loads(raw.get("receipts", "[]")))
    except ValueError:
        return "", 0, []


def set_outbox_progress(client: redis.Redis, instance: str, epoch: str, seq: int,
                        receipts: list) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.hset(outbox_key(instance), mapping={"epoch": epoch, "seq": seq,
                                             "receipts": json.dumps(receipts)})
    pipe.expire(outbox_key(instance), OUTBOX_TTL)
    pipe.execute()


# -- delivery reports -------------------------------------------------------------------------


def open_report(client: redis.Redis, gid: str, message_id: str, members: list,
                expires: float) -> None:
    key = report_key(gid, message_id)
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping={"expires": repr(expires),
                            **{m: groups.PENDING for m in members}})
    pipe.expire(key, REPORT_TTL)
    pipe.execute()


def track_report(client: redis.Redis, sender: str, gid: str, message_id: str,
                 expires: float) -> None:
    """Owe ``sender`` the final report of its message (:func:`open_reports`)."""
    pipe = client.pipeline(transaction=True)
    pipe.zadd(reports_key(sender), {f"{gid} {message_id}": expires})
    pipe.expire(reports_key(sender), REPORT_TTL)
    pipe.execute()


def open_reports(client: redis.Redis, senders: list, limit: int = 64) -> dict:
    """sender -> ``[(gid, message id, expires)]`` of the final reports it is owed, the
    ``limit`` that expire first, for each of ``senders`` owed any (one round trip)."""
    if not senders:
        return {}
    pipe = client.pipeline(transaction=False)
    for sender in senders:
        pipe.zrange(reports_key(sender), 0, limit - 1, withscores=True)
    out = {}
    for sender, entries in zip(senders, pipe.execute()):
        owed = [(*name.split(" ", 1), score) for name, score in entries if " " in name]
        if owed:
            out[sender] = owed
    return out


def close_report(client: redis.Redis, sender: str, gid: str, message_id: str) -> None:
    """``sender`` had its final report of the message (or it can never have it)."""
    client.zrem(reports_key(sender), f"{gid} {message_id}")


def mark_report(client: redis.Redis, gid: str, message_id: str, member: str,
                state: str) -> None:
    """Set ``member``'s state, only in a report that still exists."""
    key = report_key(gid, message_id)
    if client.hexists(key, member):
        client.hset(key, member, state)


def report(client: redis.Redis, gid: str, message_id: str, now: float) -> dict:
    """member -> state; a member still pending after the message expired is expired."""
    return _states(client.hgetall(report_key(gid, message_id)), now)


def reports(client: redis.Redis, messages: list, now: float) -> list:
    """:func:`report` of each ``(gid, message id)``, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for gid, message_id in messages:
        pipe.hgetall(report_key(gid, message_id))
    return [_states(raw, now) for raw in pipe.execute()] if messages else []


def _states(raw: dict, now: float) -> dict:
    expires = float(raw.pop("expires", "inf"))
    return {m: groups.EXPIRED if s == groups.PENDING and now > expires else s
            for m, s in raw.items()}


# -- what was sent, for operators (never the bodies) -----------------------------------------


def note_sent(client: redis.Redis, gid: str, message_id: str, sender: str, to: str,
              size: int, sent_at: float) -> None:
    """Keep who sent a message of how many bytes to whom, in the group's bounded record."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(sent_key(gid), {"id": message_id, "from": sender, "to": to, "size": size,
                              "sent_at": repr(sent_at)}, maxlen=SENT_MAX, approximate=False)
    pipe.expire(sent_key(gid), REPORT_TTL)
    pipe.execute()


def sent_messages(client: redis.Redis, gid: str, count: int = SENT_MAX) -> list:
    """The group's last ``count`` messages (fields of :func:`note_sent`), oldest first."""
    return [fields for _, fields in reversed(client.xrevrange(sent_key(gid), count=count))]


# -- rate limits ------------------------------------------------------------------------------


def take_tokens(client: redis.Redis, gid: str, sender: str, now: float, cost: int = 1,
                sender_rate: float = groups.SENDER_RATE,
                sender_burst: float = groups.SENDER_BURST,
                group_rate: float = groups.GROUP_RATE,
                group_burst: float = groups.GROUP_BURST) -> str:
    """:data:`RATE_OK` if both the sender's and the group's rate allow ``cost`` messages
    now (then taken from both), else which one is short: ``"sender"`` or ``"group"``."""
    return scripts.GROUP_RATE(
        keys=[sender_bucket_key(gid, sender), group_bucket_key(gid)],
        args=[repr(now), sender_rate, sender_burst, group_rate, group_burst, cost],
        client=client)
