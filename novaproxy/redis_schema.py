"""Every Redis key, TTL and entry shape novaproxy uses, in one place.

Keys of one instance share the hash tag ``{<uuid>}`` so that Redis Cluster
keeps them in one slot. Nothing here blocks for longer than the caller asks.

- ``novaproxy:requests:{<host>}`` stream, consumer group ``agents``: what the
  proxy asks the guests on one compute host. The group remembers what an agent
  took but did not acknowledge, so a restarted agent picks it up again.
- ``novaproxy:replies:{<proxy>}`` stream: the agents' answers for one proxy
  process, read by that process alone.
- ``novaproxy:{<uuid>}:route`` string: the compute host serving the instance,
  published by its agent with a TTL.
- ``novaproxy:{<uuid>}:lock`` string: the negotiation in flight for the
  instance (one at a time): a short lease its proxy renews while it works, so
  a proxy that dies frees the server within one lease.
- ``novaproxy:{<uuid>}:ops`` hash, op id -> JSON: the instance's operation
  records (:mod:`novaproxy.operations` owns their fields and states), written
  before the prepare goes out and removed once the operation's closing notice
  (end or abort) was delivered or nothing is left to tell. The agent now hosting
  the instance, or the one it was negotiated on, closes them.
- ``novaproxy:operations:{<host>}`` set: instances negotiated on that host that
  have (or had) operation records, so its agent follows them even after they
  left the host or while its own memory was lost to a restart.
- ``novaproxy:{<uuid>}:recovery`` string: the recovery under way for the
  instance (who claimed it), with a TTL; at most one at a time, cluster-wide.
- ``novaproxy:{<uuid>}:recoveries`` sorted set, time -> time: recoveries in the
  rate-limit window.
- ``novaproxy:{<uuid>}:monitor`` hash: the monitor's view of the instance
  (its fields: :class:`novaproxy.monitor_view.MonitorView`), refreshed by its
  agent with a TTL.
- ``novaproxy:events`` stream, capped: the audit trail.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from guestd import protocol

PREFIX = "novaproxy"
AGENT_GROUP = "agents"
ROUTE_TTL = 30  # seconds; agents refresh their routes well within it
REPLY_STREAM_TTL = 600  # an idle proxy's reply stream goes away after this
REPLY_STREAM_MAXLEN = 10_000
REQUEST_STREAM_MAXLEN = 10_000
EVENTS_MAXLEN = 100_000


def requests_stream(host: str) -> str:
    return f"{PREFIX}:requests:{{{host}}}"


def replies_stream(proxy_id: str) -> str:
    return f"{PREFIX}:replies:{{{proxy_id}}}"


def _instance_key(instance: str, kind: str) -> str:
    """One instance's key of ``kind``; the hash tag keeps an instance's keys in one slot."""
    return f"{PREFIX}:{{{instance}}}:{kind}"


def route_key(instance: str) -> str:
    return _instance_key(instance, "route")


def lock_key(instance: str) -> str:
    return _instance_key(instance, "lock")


def ops_key(instance: str) -> str:
    return _instance_key(instance, "ops")


def recovery_key(instance: str) -> str:
    return _instance_key(instance, "recovery")


def host_operations_key(host: str) -> str:
    return f"{PREFIX}:operations:{{{host}}}"


def recoveries_key(instance: str) -> str:
    return _instance_key(instance, "recoveries")


def monitor_key(instance: str) -> str:
    return _instance_key(instance, "monitor")


EVENTS_STREAM = f"{PREFIX}:events"


# Every client's bounds, explicit: redis-py's own defaults differ between the
# versions setup.py allows (no socket timeout and no retries in 5.x; 5 s and up
# to ten retries with backoff in 8.x, which turn one hung command into a minute).
SOCKET_TIMEOUT = 5.0  # seconds a command waits for Redis's answer
CONNECT_TIMEOUT = 2.0  # seconds to open a connection
POOL_TIMEOUT = 5.0  # seconds a bounded pool's caller waits for a free connection
# A command that lost its connection (Redis restarted, a pooled connection gone
# stale) is sent once more on a new one; a timeout is never retried: it would
# double the wait on a hung Redis.
RETRIES = 1


def connect(url: str, max_connections: int | None = None,
            socket_timeout: float = SOCKET_TIMEOUT,
            socket_connect_timeout: float = CONNECT_TIMEOUT,
            pool_timeout: float = POOL_TIMEOUT, retries: int = RETRIES,
            **kwargs) -> redis.Redis:
    """A client for redis://, rediss:// (TLS) or unix:// URLs, user and password included.

    Every command waits at most ``socket_timeout`` for its answer (a client for
    blocking reads needs more than its block time: :func:`blocking_timeout`), a
    connection takes at most ``socket_connect_timeout`` to open, and a command
    that lost its connection is sent again ``retries`` times (never after a
    timeout; 0: the caller decides what a failure means). With ``max_connections`` the pool is
    bounded: a caller waits at most ``pool_timeout`` for a free connection
    instead of opening one more.
    """
    options = {"decode_responses": True, "health_check_interval": 30,
               "socket_timeout": socket_timeout, "socket_connect_timeout": socket_connect_timeout,
               "retry": Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,)),
               **kwargs}
    if max_connections is None:
        return redis.Redis.from_url(url, **options)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=pool_timeout, **options)
    return redis.Redis(connection_pool=pool)


def blocking_timeout(block_ms: int, socket_timeout: float = SOCKET_TIMEOUT) -> float:
    """The socket timeout of a client whose reads block up to ``block_ms``: a read
    that waited its whole block still has ``socket_timeout`` for the answer."""
    return block_ms / 1000 + socket_timeout


def _check_block(client: redis.Redis, block_ms: int | None) -> None:
    """A blocking read must not outlast its socket: it would fail as a timeout
    every time nothing arrived."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if block_ms and timeout is not None and timeout <= block_ms / 1000:
        raise ValueError(f"a {block_ms} ms blocking read on a client with a {timeout} s "
                         "socket timeout: use blocking_timeout()")


def redact(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- Lua scripts: each registered once per client (EVALSHA; redis-py loads a
# script again when Redis answers NOSCRIPT, as it does after a restart).

COMPARE_AND_DELETE = """
-- Delete a key only while it still holds the caller's token (locks, claims, routes).
-- KEYS[1]: the key
-- ARGV[1]: the token the caller set it to
-- Returns 1 if deleted, 0 if the key held another token or nothing.
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

COMPARE_AND_EXTEND = """
-- Extend a key's time to live only while it still holds the caller's token (a lease).
-- KEYS[1]: the key
-- ARGV[1]: the token the caller set it to
-- ARGV[2]: the new time to live, in milliseconds
-- Returns 1 if extended, 0 if the key held another token or nothing (the lease is lost).
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""

UPDATE_OPERATION = """
-- Change fields of an operation record, only while it is in one of the expected states
-- and the negotiation lock is (or is not) held by a given token.
-- KEYS[1]: ops_key(instance)
-- KEYS[2]: lock_key(instance)
-- ARGV[1]: the operation id
-- ARGV[2]: the states it may be in, comma-separated (a record without one is 'forwarded')
-- ARGV[3]: the fields to set, a JSON object
-- ARGV[4]: a lock token, or '' for no condition on the lock
-- ARGV[5]: 'held': the token must hold the lock; 'free': it must not
-- Returns 1 if changed, 0 if the record is gone, in another state, or the lock says no.
local raw = redis.call('hget', KEYS[1], ARGV[1])
if not raw then return 0 end
if ARGV[4] ~= '' and ((redis.call('get', KEYS[2]) == ARGV[4]) ~= (ARGV[5] == 'held')) then
  return 0
end
local op = cjson.decode(raw)
local state, expected = op['state'] or 'forwarded', false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == state then expected = true end
end
if not expected then return 0 end
for k, v in pairs(cjson.decode(ARGV[3])) do op[k] = v end
redis.call('hset', KEYS[1], ARGV[1], cjson.encode(op))
return 1
"""

CLAIM_OPERATION = """
-- Claim an operation's closing notice, unless another live process holds the claim.
-- KEYS[1]: the operation's claim key
-- ARGV[1]: the claim's token (its owner)
-- ARGV[2]: how long the claim holds, in milliseconds
-- ARGV[3]: a prefix of holders the claimant may replace ('' for none)
-- Returns 1 if claimed, 0 if another holder keeps it.
local holder = redis.call('get', KEYS[1])
if holder and (ARGV[3] == '' or string.sub(holder, 1, #ARGV[3]) ~= ARGV[3]) then
  return 0
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_registered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client -> {source: Script}
_registered_lock = threading.Lock()


def _run_script(client: redis.Redis, source: str, keys: list, args: list):
    with _registered_lock:
        scripts = _registered.setdefault(client, {})
        script = scripts.get(source)
        if script is None:
            script = scripts[source] = client.register_script(source)
    return script(keys=keys, args=args)


# -- routes -------------------------------------------------------------------

def publish_routes(client: redis.Redis, host: str, instances, ttl: int = ROUTE_TTL) -> None:
    pipe = client.pipeline(transaction=False)
    for instance in instances:
        pipe.set(route_key(instance), host, ex=ttl)
    pipe.execute()


def withdraw_routes(client: redis.Redis, host: str, instances) -> None:
    """Remove routes that still point at ``host`` (another host may own them by now)."""
    for instance in instances:
        # Atomic compare-and-delete: a route another host published meanwhile stays.
        _run_script(client, COMPARE_AND_DELETE, [route_key(instance)], [host])


def route_of(client: redis.Redis, instance: str) -> str | None:
    return client.get(route_key(instance))


def _instance_of(key: str) -> str:
    return key[key.index("{") + 1:key.index("}")]


def _all_keys(client: redis.Redis, kind: str) -> list:
    """Every instance's key of ``kind`` (a SCAN: for operators, not hot paths)."""
    return list(client.scan_iter(match=_instance_key("*", kind), count=1000))


def all_routes(client: redis.Redis) -> dict:
    """instance -> host for every published route (a SCAN: for operators, not hot paths)."""
    keys = _all_keys(client, "route")
    hosts = client.mget(keys) if keys else []
    return {_instance_of(k): h for k, h in zip(keys, hosts) if h is not None}


def all_locks(client: redis.Redis) -> dict:
    """instance -> milliseconds left, for every negotiation in flight."""
    keys = _all_keys(client, "lock")
    return {_instance_of(k): client.pttl(k) for k in keys}


# -- requests and replies ------------------------------------------------------

# Outcomes an agent reports when the guest gave no valid answer (besides the
# guest's own results: accept, reject, not-negotiating).
TIMEOUT = "timeout"  # the guest did not answer within the deadline
UNREACHABLE = "unreachable"  # no guest agent to talk to, or the VM is not on this host
INVALID = "invalid"  # the guest answered something that is not a valid answer
EXPIRED = "expired"  # the request's deadline had passed before the agent could deliver it
# Outcomes that mean guestd took the request (a notice reached the applications).
DELIVERED = (protocol.ACCEPT, protocol.REJECT, protocol.NOT_NEGOTIATING, INVALID)


@dataclass(frozen=True)
class Reply:
    """An agent's answer to one request: the guest's answer, or why there is none.

    ``outcome`` is one of the guest results (accept, reject, not-negotiating)
    or a transport outcome: timeout, unreachable, invalid.
    """

    id: str
    instance: str
    outcome: str
    voters: list = field(default_factory=list)
    detail: str = ""
    host: str = ""

    def fields(self) -> dict:
        return {"reply": json.dumps(self.__dict__)}

    @classmethod
    def from_fields(cls, fields: dict) -> Reply:
        data = json.loads(fields["reply"])
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def enqueue(client: redis.Redis, host: str, request: dict, reply_to: str) -> str:
    """Queue a guest request for ``host``'s agent; returns the entry id."""
    return client.xadd(requests_stream(host),
                       {"request": json.dumps(request), "reply_to": reply_to},
                       maxlen=REQUEST_STREAM_MAXLEN, approximate=True)


def entry_age(entry_id: str, redis_now: float) -> float:
    """Seconds since the entry was added, in Redis's own clock (no host clock skew)."""
    return redis_now - int(entry_id.split("-", 1)[0]) / 1000.0


def redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def ensure_group(client: redis.Redis, host: str) -> bool:
    """Create ``host``'s request stream and consumer group unless they exist; True if
    created. From id 0: requests queued before the group existed are taken too."""
    try:
        client.xgroup_create(requests_stream(host), AGENT_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def is_missing_group(exc: redis.ResponseError) -> bool:
    """The error of a group read whose stream or group is gone (Redis lost its data)."""
    return str(exc).startswith("NOGROUP")


def take_requests(client: redis.Redis, host: str, consumer: str, pending: bool,
                  block_ms: int, count: int = 64) -> list:
    """``(entry_id, request, reply_to)`` for this host; ``pending`` re-reads unacknowledged ones."""
    start = "0" if pending else ">"
    _check_block(client, None if pending else block_ms)
    streams = client.xreadgroup(AGENT_GROUP, consumer, {requests_stream(host): start},
                                count=count, block=None if pending else block_ms)
    out = []
    for _, entries in streams or []:
        for entry_id, fields in entries:
            if not fields:  # acknowledged and trimmed meanwhile
                continue
            try:
                out.append((entry_id, json.loads(fields["request"]), fields["reply_to"]))
            except (KeyError, ValueError):
                out.append((entry_id, None, fields.get("reply_to")))
    return out


def acknowledge(client: redis.Redis, host: str, entry_id: str) -> None:
    client.xack(requests_stream(host), AGENT_GROUP, entry_id)


def send_reply(client: redis.Redis, host: str, entry_id: str, reply_to: str,
               reply: Reply) -> None:
    """Reply and acknowledge the request in one transaction: never one without the other."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(reply_to, reply.fields(), maxlen=REPLY_STREAM_MAXLEN, approximate=True)
    pipe.expire(reply_to, REPLY_STREAM_TTL)
    pipe.xack(requests_stream(host), AGENT_GROUP, entry_id)
    pipe.execute()


def read_replies(client: redis.Redis, reply_to: str, last_id: str, block_ms: int) -> list:
    """``(entry_id, Reply | None)`` after ``last_id``; None for an unreadable entry."""
    _check_block(client, block_ms)
    out = []
    for _, entries in client.xread({reply_to: last_id}, block=block_ms, count=256) or []:
        for entry_id, fields in entries:
            try:
                out.append((entry_id, Reply.from_fields(fields)))
            except (KeyError, ValueError, TypeError):
                out.append((entry_id, None))
    return out


# -- negotiation locks ---------------------------------------------------------

def acquire_lock(client: redis.Redis, instance: str, owner: str, ttl: float) -> bool:
    return bool(client.set(lock_key(instance), owner, nx=True, px=int(ttl * 1000)))


def renew_lock(client: redis.Redis, instance: str, owner: str, ttl: float) -> bool:
    """Extend ``owner``'s lock by ``ttl`` seconds from now; False if it is no longer theirs."""
    return bool(_run_script(client, COMPARE_AND_EXTEND, [lock_key(instance)],
                            [owner, int(ttl * 1000)]))


def release_lock(client: redis.Redis, instance: str, owner: str) -> None:
    _run_script(client, COMPARE_AND_DELETE, [lock_key(instance)], [owner])


# -- operation records -----------------------------------------------------------

def record_operation(client: redis.Redis, instance: str, operation: dict, ttl: float,
                     host: str | None = None) -> None:
    """Remember an operation (``operation["id"]`` names it) for ``ttl`` seconds, and
    index it under ``host``, the agent that is to follow it."""
    if host:
        # The index first: a record is never there without the way to find it.
        index = host_operations_key(host)
        pipe = client.pipeline(transaction=False)
        pipe.sadd(index, instance)
        pipe.expire(index, int(ttl) + 60)
        pipe.execute()
    key = ops_key(instance)
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, operation["id"], json.dumps(operation))
    # A safety net: each operation carries its own expiry, which the agent
    # enforces and logs; the hash goes a minute after the newest one expires.
    pipe.expire(key, int(ttl) + 60)
    pipe.execute()


def update_operation(client: redis.Redis, instance: str, op_id: str, states, changes: dict,
                     holding: str = "", released: str = "") -> bool:
    """Set ``changes`` on a record in one of ``states``; only while the negotiation
    ``holding`` still holds the server's lock, or only once ``released`` no longer
    does (a lock token, either). False if nothing was changed."""
    token, condition = (holding, "held") if holding else (released, "free")
    return bool(_run_script(client, UPDATE_OPERATION, [ops_key(instance), lock_key(instance)],
                            [op_id, ",".join(states), json.dumps(changes), token, condition]))


def recorded_on(client: redis.Redis, host: str) -> set:
    """Instances negotiated on ``host`` that may have operation records."""
    return set(client.smembers(host_operations_key(host)))


def forget_recorded(client: redis.Redis, host: str, instances) -> None:
    """Drop instances with no records left from ``host``'s index."""
    if instances:
        client.srem(host_operations_key(host), *instances)


def operations_of(client: redis.Redis, instances) -> dict:
    """instance -> list of its recorded operations, oldest first (unreadable ones are
    skipped)."""
    instances = list(instances)
    pipe = client.pipeline(transaction=False)
    for instance in instances:
        pipe.hgetall(ops_key(instance))
    out = {}
    for instance, fields in zip(instances, pipe.execute()):
        ops = []
        for raw in (fields or {}).values():
            try:
                ops.append(json.loads(raw))
            except ValueError:
                continue
        if ops:
            out[instance] = sorted(ops, key=lambda op: op.get("created", 0))
    return out


def lock_owner(client: redis.Redis, instance: str) -> str | None:
    """The token holding the instance's negotiation lock (None: no negotiation)."""
    return client.get(lock_key(instance))


def _claim_key(instance: str, op_id: str) -> str:
    return _instance_key(instance, f"claim:{op_id}")


def claim_operation(client: redis.Redis, instance: str, op_id: str, owner: str,
                    ttl: float, replaces: str = "") -> bool:
    """Claim a recorded operation's notice for ``ttl`` seconds: one process delivers it.

    A claim whose holder starts with ``replaces`` is taken over: an agent claims only
    what it is not delivering itself, so a claim of its host's that it finds is left
    from a delivery that failed, or from its killed predecessor."""
    return bool(_run_script(client, CLAIM_OPERATION, [_claim_key(instance, op_id)],
                            [owner, int(ttl * 1000), replaces]))


def release_claim(client: redis.Redis, instance: str, op_id: str, owner: str) -> None:
    """Give the claim up (the notice could not be delivered yet): the next round retries."""
    _run_script(client, COMPARE_AND_DELETE, [_claim_key(instance, op_id)], [owner])


def finish_operation(client: redis.Redis, instance: str, op_id: str) -> bool:
    """Remove a recorded operation and its notice's claim; False if another process
    finished it first. (A record that comes back, from a Redis restored from an older
    snapshot, is then closed again: with the same closing request id, which guestd
    answers from memory.)"""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(ops_key(instance), op_id)
    pipe.delete(_claim_key(instance, op_id))
    removed, _ = pipe.execute()
    return bool(removed)


def all_operations(client: redis.Redis) -> dict:
    """instance -> operations, for every instance (a SCAN: for operators)."""
    keys = _all_keys(client, "ops")
    return operations_of(client, [_instance_of(k) for k in keys])


# -- recoveries and the monitor's view ------------------------------------------

CLAIMED, ALREADY_CLAIMED, RATE_LIMITED = "claimed", "already-claimed", "rate-limited"

CLAIM_RECOVERY = """
-- Claim an instance's recovery unless one is under way or the window's allowance is
-- spent; one script, so two agents (or a restarted one) can never both win.
-- KEYS[1]: recovery_key(instance), the claim
-- KEYS[2]: recoveries_key(instance), the recoveries started in the window (time -> time)
-- ARGV[1]: the claim's token (its owner)
-- ARGV[2]: how long the claim holds, in milliseconds
-- ARGV[3]: now, Redis's time in seconds
-- ARGV[4]: the window, in seconds
-- ARGV[5]: how many recoveries may start within the window
-- Returns 'claimed', 'already-claimed' or 'rate-limited'.
if redis.call('exists', KEYS[1]) == 1 then return 'already-claimed' end
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('zremrangebyscore', KEYS[2], '-inf', now - window)
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[5]) then return 'rate-limited' end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('zadd', KEYS[2], now, ARGV[3])
redis.call('expire', KEYS[2], math.ceil(window))
return 'claimed'
"""


def claim_recovery(client: redis.Redis, instance: str, owner: str, hold: float,
                   window: float, allowed: int) -> str:
    """:data:`CLAIMED`, :data:`ALREADY_CLAIMED` or :data:`RATE_LIMITED`.

    The claim lasts ``hold`` seconds (the time a recovered guest has to answer
    again); at most ``allowed`` recoveries start within ``window`` seconds.
    """
    now = redis_time(client)
    return _run_script(client, CLAIM_RECOVERY, [recovery_key(instance), recoveries_key(instance)],
                       [owner, int(hold * 1000), f"{now:.6f}", window, allowed])


def recovery_under_way(client: redis.Redis, instance: str) -> bool:
    return bool(client.exists(recovery_key(instance)))


def release_recovery(client: redis.Redis, instance: str, owner: str) -> None:
    """The guest answered again: a later failure is a new one."""
    _run_script(client, COMPARE_AND_DELETE, [recovery_key(instance)], [owner])


def recoveries_within(client: redis.Redis, instance: str, window: float) -> int:
    now = redis_time(client)
    return client.zcount(recoveries_key(instance), now - window, "+inf")


def publish_monitor(client: redis.Redis, views: dict, ttl: float) -> None:
    """instance -> the monitor's view of it (flat string fields), for operators."""
    pipe = client.pipeline(transaction=False)
    for instance, view in views.items():
        key = monitor_key(instance)
        pipe.delete(key)
        pipe.hset(key, mapping={k: str(v) for k, v in view.items()})
        pipe.expire(key, int(ttl))
    pipe.execute()


def monitor_view(client: redis.Redis, instance: str) -> dict:
    """The last published view of one instance ({} if none), e.g. for a restarted agent."""
    return client.hgetall(monitor_key(instance))


def all_monitored(client: redis.Redis) -> dict:
    """instance -> its monitor view, for every monitored instance (a SCAN)."""
    keys = _all_keys(client, "monitor")
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {_instance_of(k): v for k, v in zip(keys, pipe.execute()) if v}


# -- audit ---------------------------------------------------------------------

def audit(client: redis.Redis, kind: str, instance: str, **details) -> None:
    """Append one event to the capped audit stream."""
    fields = {"kind": kind, "instance": instance, "time": f"{time.time():.3f}"}
    fields.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in details.items()})
    client.xadd(EVENTS_STREAM, fields, maxlen=EVENTS_MAXLEN, approximate=True)


def read_events(client: redis.Redis, count: int, after: str | None = None,
                block_ms: int | None = None) -> list:
    """Newest ``count`` events (oldest first), or those after ``after``."""
    if after is None:
        return list(reversed(client.xrevrange(EVENTS_STREAM, count=count)))
    _check_block(client, block_ms)
    streams = client.xread({EVENTS_STREAM: after}, count=count, block=block_ms)
    return [entry for _, entries in streams or [] for entry in entries]
