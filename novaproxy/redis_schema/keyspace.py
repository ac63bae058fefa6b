"""How novaproxy names its Redis keys: one prefix, one hash tag per instance.

Keys of one instance share the hash tag ``{<uuid>}`` so that Redis Cluster
keeps them in one slot; a stream of one host or proxy process is tagged with
that host or process. Each key's builder lives in the module that owns the key.
"""

from __future__ import annotations

import redis

PREFIX = "novaproxy"


def instance_key(instance: str, kind: str) -> str:
    """One instance's key of ``kind``; the hash tag keeps an instance's keys in one slot."""
    return f"{PREFIX}:{{{instance}}}:{kind}"


def instance_of(key: str) -> str:
    """The instance a key of :func:`instance_key` belongs to."""
    return key[key.index("{") + 1:key.index("}")]


def scan(client: redis.Redis, kind: str) -> list:
    """Every instance's key of ``kind`` (a SCAN: for operators, not hot paths)."""
    return list(client.scan_iter(match=instance_key("*", kind), count=1000))
