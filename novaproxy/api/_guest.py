"""Asking a guest through Redis: queue the request for its host, wait for the reply.

One reader thread per process collects every reply for this process from its
own reply stream and hands each to the request waiting for it, so a thousand
negotiations in flight cost one blocking Redis connection, not a thousand.
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

from novaproxy import redis_schema

LOG = logging.getLogger(__name__)
# Beyond a request's timeout, how long to wait for the agent's reply (its way
# back through Redis); the agent itself answers within the timeout.
REPLY_GRACE = 0.5
READ_BLOCK_MS = 5000


class GuestChannel:
    def __init__(self, redis_url: str, max_connections: int) -> None:
        self.redis_url = redis_url
        # Every waiting negotiation shares these (plus the one reader connection).
        self.redis = redis_schema.connect(redis_url, max_connections=max_connections,
                                          client_name="novaproxy-api")
        self._waiting: dict = {}
        self._lock = threading.Lock()
        self._reader_pid = None  # the reader thread does not survive a fork
        self._stream = None

    def _ensure_reader(self) -> str:
        with self._lock:
            if self._reader_pid != os.getpid():
                self._stream = redis_schema.replies_stream(f"{os.getpid()}-{uuid.uuid4().hex}")
                self._reader_pid = os.getpid()
                threading.Thread(target=self._read_replies, args=(self._stream,),
                                 name="novaproxy-replies", daemon=True).start()
            return self._stream

    def _read_replies(self, stream: str) -> None:
        reader = redis_schema.connect(self.redis_url, socket_timeout=READ_BLOCK_MS / 1000 + 5,
                                      client_name="novaproxy-api-replies")
        last_id = "0-0"  # the stream is ours alone and new: nothing before it is lost
        while True:
            try:
                entries = redis_schema.read_replies(reader, stream, last_id, READ_BLOCK_MS)
            except (redis.RedisError, OSError) as exc:
                LOG.warning("cannot read guest replies from Redis: %s", exc)
                threading.Event().wait(1.0)
                continue
            for entry_id, reply in entries:
                last_id = entry_id
                if reply is None:
                    LOG.warning("unreadable reply %s in %s", entry_id, stream)
                    continue
                with self._lock:
                    future = self._waiting.pop(reply.id, None)
                if future is not None and not future.done():
                    future.set_result(reply)

    def ask(self, host: str, request: dict) -> redis_schema.Reply:
        """Send ``request`` to the agent on ``host``; its reply, or a timeout reply.

        Raises ``redis.RedisError`` if Redis cannot take the request.
        """
        deadline = time.monotonic() + request["timeout"] + REPLY_GRACE
        stream = self._ensure_reader()
        future: Future = Future()
        with self._lock:
            self._waiting[request["id"]] = future
        try:
            # The deadline runs from the ask, not from when a pooled connection was free.
            redis_schema.enqueue(self.redis, host, request, stream)
            return future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            return redis_schema.Reply(request["id"], request["instance"], redis_schema.TIMEOUT,
                                      detail=f"no reply from the agent on {host} within "
                                             f"{request['timeout']:g}s", host=host)
        finally:
            with self._lock:
                self._waiting.pop(request["id"], None)
