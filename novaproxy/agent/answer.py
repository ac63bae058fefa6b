"""Answering one request the proxy queued for this host: guest, reply, audit.

The request is taken to the guest (after the closing notices due for the
instance's older operations, when :mod:`endings` follows them), and the reply
is written back to the proxy again and again while Redis does not take it,
until the request's deadline: a lost NACK would reach the proxy as no answer.
An entry not acknowledged stays pending, for a restarted agent to answer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis

from guestd import protocol
from novaproxy import audit, redis_schema, replies, scaling
from novaproxy.agent.deliver import budget
from novaproxy.agent.endings import Endings

LOG = logging.getLogger("novaproxy.agent.answer")
# A reply that Redis did not take is sent again after this, doubling up to the
# cap, until the request's deadline.
REPLY_RETRY, REPLY_RETRY_CAP = 0.05, 0.5


@dataclass(frozen=True)
class Answerer:
    """What answering needs. ``deliver(req, timeout)`` takes a request to the guest;
    ``endings`` (None without Nova) sends older closings first; ``redis_now()`` is
    Redis's clock as this host reckons it (a request's age is counted on it)."""

    redis: redis.Redis
    host: str
    deliver: Callable[[dict, float], replies.Reply]
    endings: Endings | None
    redis_now: Callable[[], float]
    stopping: threading.Event
    # scale(req, timeout): the agent's own answer to a vCPU scaling request
    # (:class:`novaproxy.agent.scale.Scaler`), which never goes to guestd.
    scale: Callable[[dict, float], replies.Reply] | None = None

    def handle(self, entry_id: str, raw: dict | None, reply_to: str | None) -> None:
        try:
            self._answer(entry_id, raw, reply_to)
        except (redis.RedisError, OSError) as exc:
            # Not acknowledged: the entry stays pending and is retried after a restart.
            LOG.warning("request %s: could not reply: %s", entry_id, exc)
        except Exception:
            LOG.exception("request %s: unexpected failure", entry_id)
            redis_schema.acknowledge(self.redis, self.host, entry_id)

    def _answer(self, entry_id: str, raw: dict | None, reply_to: str | None) -> None:
        host = self.host
        try:
            req = protocol.parse_request(raw if isinstance(raw, dict) else {})
        except protocol.ProtocolError as exc:
            LOG.warning("request %s is malformed (%s); dropped", entry_id, exc)
            redis_schema.acknowledge(self.redis, host, entry_id)
            return
        age = redis_schema.entry_age(entry_id, self.redis_now())
        started = time.monotonic()
        deadline = started + req["timeout"] - age  # the proxy waits no longer (nor much more)
        negotiating = self.endings is not None and req["phase"] in (protocol.VOTE,
                                                                     protocol.PREPARE)
        why_not = ""
        if negotiating:
            # Older operations' closing notices first: the guest hears them in order.
            try:
                why_not = self.endings.before_delivery(req, deadline)
            except (redis.RedisError, OSError) as exc:
                LOG.warning("request %s: older operations of %s not settled first: %s",
                            req["id"], req["instance"], exc)
            age += time.monotonic() - started
        try:
            if why_not:
                reply = replies.Reply(req["id"], req["instance"],
                                           replies.UNREACHABLE, detail=why_not, host=host)
            elif req["phase"] in scaling.AGENT_PHASES:
                reply = (self.scale(req, budget(req["timeout"], age)) if self.scale else
                         replies.Reply(req["id"], req["instance"], replies.UNREACHABLE,
                                       detail="this agent does not scale vCPUs", host=host))
            else:
                reply = self.deliver(req, budget(req["timeout"], age))
        finally:
            if negotiating:
                self.endings.after_delivery(req)
        elapsed = time.monotonic() - started
        voters = ", ".join(f"{v['name']}={v['vote']}" for v in reply.voters)
        LOG.info("%s %s of instance %s (request %s): %s in %.0f ms%s%s",
                 req["event"], req["phase"], req["instance"], req["id"], reply.outcome,
                 elapsed * 1000, f" [{voters}]" if voters else "",
                 f" ({reply.detail})" if reply.detail else "")
        if not self._reply(entry_id, reply_to, reply, deadline):
            return
        try:
            redis_schema.audit(self.redis, audit.GUEST_ANSWER, req["instance"], request=req["id"],
                               event=req["event"], phase=req["phase"], outcome=reply.outcome,
                               voters=reply.voters, detail=reply.detail, host=host,
                               took_ms=round(elapsed * 1000))
        except (redis.RedisError, OSError) as exc:
            LOG.warning("request %s: replied, but the audit event was not written: %s",
                        req["id"], exc)

    def _reply(self, entry_id: str, reply_to: str | None, reply: replies.Reply,
               deadline: float) -> bool:
        """Reply and acknowledge, again and again while Redis does not take it, until the
        request's deadline. False if the deadline passed first (the entry stays pending,
        for a restart)."""
        host, wait, attempts = self.host, REPLY_RETRY, 0
        while True:
            attempts += 1
            try:
                if reply_to:
                    redis_schema.send_reply(self.redis, host, entry_id, reply_to, reply)
                else:
                    redis_schema.acknowledge(self.redis, host, entry_id)
            except (redis.RedisError, OSError) as exc:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    LOG.warning("request %s: %s reply not delivered after %d attempt(s), the "
                                "request's deadline has passed: %s", reply.id, reply.outcome,
                                attempts, exc)
                    return False
                if attempts == 1:
                    LOG.warning("request %s: Redis did not take the %s reply (%s); retrying "
                                "for %.1fs more", reply.id, reply.outcome, exc, left)
                self.stopping.wait(min(wait, left))
                wait = min(wait * 2, REPLY_RETRY_CAP)
                continue
            if attempts > 1:
                LOG.info("request %s: %s reply delivered at attempt %d", reply.id,
                         reply.outcome, attempts)
            return True
