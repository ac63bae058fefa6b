"""Every Redis key, TTL and entry shape novaproxy uses: the proxy and the agents
meet only here.

Callers use the package (``redis_schema.route_of(client, uuid)``), whose modules
each own one contract and say in their docstrings what their keys hold:

- ``novaproxy:requests:{<host>}`` stream, :mod:`.messages`: what the proxy asks
  one host's guests
- ``novaproxy:replies:{<proxy>}`` stream, :mod:`.messages`: the agents' answers
  to one proxy process
- ``novaproxy:{<uuid>}:route`` string, :mod:`.routes`: the host serving the instance
- ``novaproxy:{<uuid>}:lock`` string, :mod:`.locks`: the negotiation in flight (a lease)
- ``novaproxy:{<uuid>}:ops`` hash, :mod:`.records`: the instance's operation records
- ``novaproxy:{<uuid>}:claim:<op id>`` string, :mod:`.records`: who delivers an
  operation's closing notice
- ``novaproxy:operations:{<host>}`` set, :mod:`.records`: the instances with records
  a host follows
- ``novaproxy:{<uuid>}:recovery`` string, :mod:`.recoveries`: the recovery under way
- ``novaproxy:{<uuid>}:recoveries`` sorted set, :mod:`.recoveries`: the recoveries
  in the rate-limit window
- ``novaproxy:{<uuid>}:monitor`` hash, :mod:`.monitor_views`: the monitor's view of
  the instance
- ``novaproxy:{<uuid>}:vcpus`` hash, :mod:`.vcpus`: the vCPUs the instance was last
  scaled to (online, plugged, by which operation, when)
- ``novaproxy:events`` stream, :mod:`.events`: the audit trail
- ``novaproxy:{<uuid>}:member``, ``:inbox``, ``:inbox-pos``, ``:outbox`` and
  ``novaproxy:{group:<gid>}:members``, ``:report:<id>``, ``:sent``,
  ``:bucket[:<uuid>]``, :mod:`.groups`: server-group messaging (memberships, inboxes,
  what was taken from outboxes, delivery reports, what was sent, rate buckets)

:mod:`.keyspace` spells the keys (one hash tag per instance, for Redis
Cluster), :mod:`.connection` makes clients with explicit bounds, and
:mod:`.scripts` holds the Lua scripts that make a check and its write one step.
Nothing here blocks for longer than the caller asks.
"""

from novaproxy.redis_schema.connection import (
    CONNECT_TIMEOUT,
    POOL_TIMEOUT,
    RETRIES,
    SOCKET_TIMEOUT,
    blocking_timeout,
    connect,
    redact,
    redis_time,
)
from novaproxy.redis_schema.events import EVENTS_MAXLEN, EVENTS_STREAM, audit, read_events
from novaproxy.redis_schema.groups import (
    GROUP_TTL,
    INBOX_TTL,
    MEMBER_TTL,
    OUTBOX_TTL,
    RATE_OK,
    REPORT_TTL,
    SENT_MAX,
    all_members,
    append_message,
    cache_group,
    cache_member,
    cached_group,
    cached_group_ids,
    cached_member,
    cached_members,
    close_report,
    group_bucket_key,
    group_key,
    inbox_key,
    inbox_pos_key,
    inbox_positions,
    inbox_wake_key,
    mark_report,
    member_key,
    note_sent,
    open_report,
    open_reports,
    outbox_key,
    outbox_progress,
    read_inboxes,
    report,
    report_key,
    reports,
    reports_key,
    sender_bucket_key,
    sent_key,
    sent_messages,
    set_inbox_position,
    set_outbox_progress,
    take_tokens,
    track_report,
    wake_inbox_reader,
)
from novaproxy.redis_schema.locks import (
    acquire_lock,
    all_locks,
    lock_key,
    lock_owner,
    release_lock,
    renew_lock,
)
from novaproxy.redis_schema.messages import (
    AGENT_GROUP,
    REPLY_STREAM_MAXLEN,
    REPLY_STREAM_TTL,
    REQUEST_STREAM_MAXLEN,
    acknowledge,
    enqueue,
    ensure_group,
    entry_age,
    is_missing_group,
    read_replies,
    replies_stream,
    requests_stream,
    send_reply,
    take_requests,
)
from novaproxy.redis_schema.monitor_views import (
    all_monitored,
    monitor_key,
    monitor_view,
    publish_monitor,
)
from novaproxy.redis_schema.records import (
    all_operations,
    claim_key,
    claim_operation,
    finish_operation,
    forget_recorded,
    host_operations_key,
    operations_of,
    ops_key,
    record_operation,
    recorded_on,
    release_claim,
    update_operation,
)
from novaproxy.redis_schema.recoveries import (
    ALREADY_CLAIMED,
    CLAIMED,
    RATE_LIMITED,
    claim_recovery,
    recoveries_key,
    recovery_key,
    recovery_under_way,
    release_recovery,
)
from novaproxy.redis_schema.routes import (
    ROUTE_TTL,
    all_routes,
    publish_routes,
    route_key,
    route_of,
    withdraw_routes,
)
from novaproxy.redis_schema.vcpus import VCPUS_TTL, all_vcpus, record_vcpus, vcpus_key, vcpus_of

__all__ = [
    "AGENT_GROUP", "ALREADY_CLAIMED", "CLAIMED", "CONNECT_TIMEOUT", "EVENTS_MAXLEN",
    "EVENTS_STREAM", "GROUP_TTL", "MEMBER_TTL", "INBOX_TTL", "OUTBOX_TTL", "POOL_TIMEOUT",
    "RATE_OK",
    "REPORT_TTL", "RATE_LIMITED", "SENT_MAX", "REPLY_STREAM_MAXLEN", "REPLY_STREAM_TTL",
    "REQUEST_STREAM_MAXLEN", "RETRIES", "ROUTE_TTL", "SOCKET_TIMEOUT", "VCPUS_TTL",
    "acknowledge", "acquire_lock", "all_locks", "all_members", "all_monitored", "all_vcpus",
    "all_operations", "all_routes",
    "append_message", "audit", "blocking_timeout", "cache_group", "cache_member",
    "cached_group", "cached_group_ids", "cached_member", "cached_members", "claim_key",
    "claim_operation",
    "claim_recovery", "connect", "ensure_group", "enqueue", "entry_age", "finish_operation",
    "forget_recorded", "group_bucket_key", "group_key", "host_operations_key",
    "inbox_key",
    "inbox_pos_key", "inbox_positions", "is_missing_group", "lock_key", "lock_owner",
    "mark_report", "member_key", "note_sent", "monitor_key", "monitor_view", "open_report",
    "open_reports", "close_report", "reports", "reports_key", "track_report",
    "inbox_wake_key", "wake_inbox_reader",
    "operations_of", "ops_key", "outbox_key", "outbox_progress", "publish_monitor",
    "publish_routes", "read_events", "read_inboxes", "read_replies", "record_operation",
    "recorded_on", "recoveries_key", "recovery_key", "recovery_under_way", "redact",
    "redis_time", "release_claim", "release_lock", "release_recovery", "renew_lock",
    "replies_stream", "report", "report_key", "requests_stream", "route_key", "route_of",
    "send_reply", "sender_bucket_key", "sent_key", "sent_messages", "set_inbox_position",
    "set_outbox_progress",
    "take_requests", "take_tokens", "update_operation", "vcpus_key", "vcpus_of",
    "withdraw_routes", "record_vcpus",
]
