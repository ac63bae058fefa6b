"""Asking a guest through Redis: queue the request for its host, wait for the reply.

One reader thread per process collects every reply for this process from its
own reply stream and hands each to the request waiting for it, so a thousand
negotiations in flight cost one blocking Redis connection, not a thousand.

Redis being down is never the guest's silence: a wait during which this
process lost Redis, or that ends with Redis not answering, is ``unreachable``
(the guest could not be asked), and so is a wait that got no reply from the
host's agent at all. Only the agent says ``timeout``: it asked the guest, and
the guest did not answer in time. Every Redis command is bounded by the
policy's ``redis_timeout`` and never retried, so a hung Redis costs a
negotiation at most that much per command, not the library's retries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import redis

from novaproxy import peer_notify, redis_schema, replies

LOG = logging.getLogger(__name__)
# Beyond a request's timeout, how long to wait for the agent's reply (its way
# back through Redis); the agent itself answers within the timeout.
REPLY_GRACE = 0.5
# The reader's blocking read; its socket timeout is this plus the command timeout
# (redis_schema.blocking_timeout), so a hung Redis is noticed by the reader within that.
READ_BLOCK_MS = 2000
# After a failed read, the reader tries again after this.
READ_RETRY = 0.5
# The detail of a reply that never came because Redis was lost meanwhile.
REDIS_LOST = "Redis was unreachable while waiting for the reply"


class NegotiationRedis:
    """Redis as one negotiation uses it: once Redis failed the negotiation (``failed``),
    no further call is made that could hold the caller, only background ones."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.failed = False


class GuestChannel:
    def __init__(self, redis_url: str, max_connections: int, command_timeout: float) -> None:
        self.redis_url = redis_url
        self.command_timeout = command_timeout
        # Every waiting negotiation shares these (plus the one reader connection); a
        # command waits for a free one no longer than it may wait for Redis itself.
        self.redis = redis_schema.connect(
            redis_url, max_connections=max_connections, client_name="novaproxy-api",
            socket_timeout=command_timeout, socket_connect_timeout=command_timeout,
            pool_timeout=command_timeout, retries=0)
        self._waiting: dict = {}
        self._lock = threading.Lock()
        self._reader_pid = None  # the reader thread does not survive a fork
        self._stream = None
        # How many times the reader lost Redis; a wait that saw it change lost it too.
        self._losses = 0
        self._reading = False  # the reader's last read worked
        # Peer state notices of the negotiations (prepare, abort): published in the
        # background, to the groups the agents' membership cache knows.
        self.peers = peer_notify.Notifier(self.redis, peer_notify.CachedMembership(self.redis),
                                          lambda: redis_schema.redis_time(self.redis))

    def _ensure_reader(self) -> str:
        with self._lock:
            if self._reader_pid != os.getpid():
                self._stream = redis_schema.replies_stream(f"{os.getpid()}-{uuid.uuid4().hex}")
                self._reader_pid = os.getpid()
                self._reading = True
                threading.Thread(target=self._read_replies, args=(self._stream,),
                                 name="novaproxy-replies", daemon=True).start()
            return self._stream

    def _read_replies(self, stream: str) -> None:
        reader = redis_schema.connect(
            self.redis_url,
            socket_timeout=redis_schema.blocking_timeout(READ_BLOCK_MS, self.command_timeout),
            socket_connect_timeout=self.command_timeout, retries=0,
            client_name="novaproxy-api-replies")
        last_id = "0-0"  # the stream is ours alone and new: nothing before it is lost
        while True:
            try:
                entries = redis_schema.read_replies(reader, stream, last_id, READ_BLOCK_MS)
            except (redis.RedisError, OSError) as exc:
                with self._lock:
                    self._losses += 1
                    if self._reading:
                        LOG.warning("lost Redis while reading guest replies (%s); waits in "
                                    "flight count as unreachable; reconnecting", exc)
                    self._reading = False
                threading.Event().wait(READ_RETRY)
                continue
            with self._lock:
                if not self._reading:
                    LOG.info("reading guest replies from Redis again")
                self._reading = True
            for entry_id, reply in entries:
                last_id = entry_id
                if reply is None:
                    LOG.warning("unreadable reply %s in %s", entry_id, stream)
                    continue
                with self._lock:
                    future = self._waiting.pop(reply.id, None)
                if future is not None and not future.done():
                    future.set_result(reply)

    def _redis_answers(self) -> bool:
        try:
            self.redis.ping()
        except (redis.RedisError, OSError):
            return False
        return True

    def ask(self, host: str, request: dict) -> replies.Reply:
        """Send ``request`` to the agent on ``host``; its reply, or why there is none.

        Raises ``redis.RedisError`` if Redis cannot take the request.
        """
        deadline = time.monotonic() + request["timeout"] + REPLY_GRACE
        stream = self._ensure_reader()
        future: Future = Future()
        with self._lock:
            self._waiting[request["id"]] = future
            losses = self._losses
        try:
            # The deadline runs from the ask, not from when a pooled connection was free.
            redis_schema.enqueue(self.redis, host, request, stream)
            return future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            with self._lock:
                lost = self._losses != losses or not self._reading
            if lost or not self._redis_answers():
                why = REDIS_LOST
            else:
                why = f"no reply from the agent on {host} within {request['timeout']:g}s"
            return replies.Reply(request["id"], request["instance"],
                                 replies.UNREACHABLE, detail=why, host=host)
        finally:
            with self._lock:
                self._waiting.pop(request["id"], None)
