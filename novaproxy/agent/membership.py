"""Who is in which server group, as Nova says, cached in Redis for ``GROUP_TTL``.

Every agent reads through the same cache, so a group's members are read from Nova
about once per ``GROUP_TTL`` whichever host asks. A group grows while it is cached:
a member read from Nova (its agent polls it from its first boot on) whose cached
group does not list it reads the group again, so a broadcast reaches a new member
within a poll of its boot, not a ``GROUP_TTL`` later; a message naming a member the
cached group does not hold reads the group again too.
"""

from __future__ import annotations

import redis

from novaproxy import groups, redis_schema
from novaproxy.groups import Group, Member


class Membership:
    """Nova's view of instances as group members; ``nova`` is :class:`agent.nova.Nova`."""

    def __init__(self, client: redis.Redis, nova) -> None:
        self._redis = client
        self._nova = nova

    def member(self, instance: str, fresh: bool = False) -> Member:
        """The instance as a group member (raises NovaError when Nova cannot be read)."""
        if not fresh:
            cached = redis_schema.cached_member(self._redis, instance,
                                                max_age=redis_schema.GROUP_TTL)
            if cached is not None:
                return cached
        server = self._nova.server_with_groups(instance)  # one read: flavor and groups
        member = groups.member_from(instance, server, (server or {}).get("server_groups", []))
        redis_schema.cache_member(self._redis, member)
        if member.group:
            group = redis_schema.cached_group(self._redis, member.group)
            if group is not None and instance not in group.members:
                self.group(member.group, fresh=True)  # it joined since the group was read
        return member

    def group(self, gid: str, fresh: bool = False) -> Group | None:
        """The server group ``gid``; None once Nova no longer knows it."""
        if not fresh:
            cached = redis_schema.cached_group(self._redis, gid)
            if cached is not None:
                return cached
        found = self._nova.server_group(gid)
        if found is None:
            return None
        group = Group(gid, found["name"], found["policy"], tuple(found["members"]))
        redis_schema.cache_group(self._redis, group)
        return group

    def peers(self, group: Group) -> dict:
        """member -> :class:`Member` for every member of ``group`` (a bounded group: the
        caller checked :data:`groups.MAX_GROUP`)."""
        peers = redis_schema.cached_members(self._redis, list(group.members))
        for instance in group.members:
            if instance not in peers:
                peers[instance] = self.member(instance)
        return peers
