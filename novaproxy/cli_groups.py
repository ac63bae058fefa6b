"""``novaproxy groups`` and ``novaproxy group``: server-group messaging for operators.

Read from Redis only (the CLI has no Nova credentials): the membership cache the
agents fill from Nova (a group is cached ``GROUP_TTL`` after an agent last needed it,
a member while its agent polls it), the monitor views, and each group's record of what
was sent. Sizes, senders, recipients and report states are shown; bodies never are,
and Redis does not keep them past delivery anyway.
"""

from __future__ import annotations

import time
from collections import defaultdict

import redis

from guestd import group_protocol as gp
from novaproxy import redis_schema
from novaproxy.groups import Member


def _at(stamp: str) -> str:
    try:
        value = float(stamp)
    except ValueError:
        return "?"
    return (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
            + f".{int(value % 1 * 1000):03d}")


def _by_group(members: dict) -> dict:
    """gid -> the cached members that name it, sorted."""
    found = defaultdict(list)
    for instance, member in sorted(members.items()):
        if member.group:
            found[member.group].append(instance)
    return found


def cmd_groups(client: redis.Redis, args) -> int:
    """Every group the membership cache knows, from its own record or its members'."""
    members = redis_schema.all_members(client)
    by_group = _by_group(members)
    gids = sorted(set(redis_schema.cached_group_ids(client)) | set(by_group))
    print(f"server groups in the membership cache: {len(gids)}")
    for gid in gids:
        group = redis_schema.cached_group(client, gid)
        names = list(group.members) if group else by_group[gid]
        taking = sum(1 for m in names if m in members and members[m].messaging)
        head = f'"{group.name}" ({group.policy})' if group else "(group record expired)"
        print(f"  {gid} {head}: {len(names)} member(s), {taking} taking messages")
    return 0


def _member_line(instance: str, member: Member | None, monitor: dict) -> str:
    if member is None:
        return f"  {instance}: not in the membership cache"
    if not member.known:
        return f"  {instance}: Nova does not know it (deleted)"
    state = monitor.get("state")
    return (f"  {instance} on {member.host or '?'}: Nova {member.status or '?'}, "
            f"monitor {state if state else 'not watched'}, "
            f"messaging {'on' if member.messaging else 'off'}")


def _sent_line(fields: dict, states: dict) -> str:
    to = "all" if fields.get("to") == gp.BROADCAST else fields.get("to", "?")
    report = (", ".join(f"{m} {s}" for m, s in sorted(states.items())) if states
              else "report expired")
    return (f"  {_at(fields.get('sent_at', ''))}  {fields.get('id', '?')} from "
            f"{fields.get('from', '?')} to {to}, {fields.get('size', '?')} bytes: {report}")


def _resolve(client: redis.Redis, name: str, member: Member | None) -> tuple:
    """``(gid, group or None, members)`` for a server (``member``: its cached record) or
    a group id; gid "" if unknown."""
    gid = member.group if member is not None else name
    group = redis_schema.cached_group(client, gid) if gid else None
    if group is not None:
        return gid, group, list(group.members)
    listed = _by_group(redis_schema.all_members(client)).get(gid, []) if gid else []
    return (gid if listed else ""), None, listed


def cmd_group(client: redis.Redis, args) -> int:
    """One group: its members and their states, then its recent messages; 1 if unknown."""
    member = redis_schema.cached_member(client, args.name)
    if member is not None and not member.group:
        print(f"{args.name}: in no server group, as Nova said (messaging to it is "
              f"refused: not-in-group)")
        return 1
    gid, group, names = _resolve(client, args.name, member)
    if not gid:
        print(f"{args.name}: no server group of that id or with that member in the "
              f"membership cache (an agent caches one for {redis_schema.GROUP_TTL}s "
              f"after reading it from Nova)")
        return 1
    head = (f'"{group.name}", policy {group.policy}' if group is not None
            else "(group record expired: members as their own records say)")
    print(f"group {gid} {head}: {len(names)} member(s)")
    cached = redis_schema.cached_members(client, names)
    for instance in names:
        print(_member_line(instance, cached.get(instance),
                           redis_schema.monitor_view(client, instance)))
    sent = redis_schema.sent_messages(client, gid, args.count)
    now = redis_schema.redis_time(client)
    print(f"recent messages, oldest first: {len(sent)}")
    for fields in sent:
        states = redis_schema.report(client, gid, fields.get("id", ""), now)
        print(_sent_line(fields, states))
    return 0
