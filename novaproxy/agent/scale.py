"""vCPU scaling on this host: the proxy's own requests, and the count kept across boots.

The proxy negotiates a scale operation with the guest's applications (vote,
prepare) and asks this agent, never guestd, for the rest (:mod:`novaproxy.scaling`):

- ``read``: the guest's vCPUs, by the guest's own view (``guest-get-vcpus``);
- ``apply``: one operation's change. The agent carries it out only while the
  operation's record is ``forwarding`` and its proxy still holds the server
  (compare-and-set, which also writes the planned result into the record, so
  that whoever closes the operation later can tell from the guest whether it
  happened), then checks it with the guest's view and settles the record:
  ``forwarded`` (the end notice is due) or ``refused`` with the guest's error
  (the abort), after putting back any vCPU it changed. The count is recorded
  for the instance (:mod:`novaproxy.redis_schema.vcpus`).

After every boot (the monitor's first answer: a reboot of any kind, a start, a
rebuild, an evacuation or migration's arrival) every vCPU is online again, and
:meth:`Scaler.booted` takes the recorded count back, clamped to the vCPUs the
guest has now (a resize may have changed them).
"""

from __future__ import annotations

import logging
import time

import redis

from guestd import protocol
from novaproxy import audit, operations, redis_schema, replies, scaling
from novaproxy.agent.guest_agent import GuestAgentError, GuestAgentUnavailable
from novaproxy.agent.vcpus import Vcpus, View
from novaproxy.scaling import ScaleError, cpu_list

LOG = logging.getLogger("novaproxy.agent.scale")
# The audit event of a count taken back after a boot.
REAPPLY = "re-apply"


class Scaler:
    """``guests.agent(instance)`` is a guest's agent client (:mod:`hypervisor`)."""

    def __init__(self, client: redis.Redis, host: str, guests) -> None:
        self.redis = client
        self.host = host
        self.guests = guests

    def _vcpus(self, instance: str) -> Vcpus:
        return Vcpus(self.guests.agent(instance))

    def online(self, instance: str) -> frozenset | None:
        """The vCPUs online in the guest now, or None if it cannot be read."""
        try:
            return self._vcpus(instance).view(scaling.READ_TIMEOUT).online
        except (GuestAgentError, ScaleError) as exc:
            LOG.info("instance %s: vCPUs not readable: %s", instance, exc)
            return None

    def answer(self, req: dict, timeout: float) -> replies.Reply:
        """The reply to one of the proxy's scaling requests, within ``timeout``."""
        instance = req["instance"]

        def reply(outcome: str, detail: str = "", **data) -> replies.Reply:
            return replies.Reply(req["id"], instance, outcome, detail=detail, host=self.host,
                                 data=data)

        if timeout <= 0:
            return reply(replies.EXPIRED, "the request's deadline had passed")
        try:
            vcpus = self._vcpus(instance)
            if req["phase"] == scaling.READ:
                view = vcpus.view(timeout)
                return reply(protocol.ACCEPT, **_data(view))
            if req["phase"] == scaling.APPLY:
                return self._apply(vcpus, req, timeout, reply)
        except GuestAgentUnavailable as exc:
            return reply(replies.UNREACHABLE, str(exc))
        except GuestAgentError as exc:
            return reply(replies.UNREACHABLE, f"the guest agent failed: {exc}")
        except ScaleError as exc:
            return reply(replies.INVALID, str(exc))
        return reply(replies.INVALID, f"unknown scaling request {req['phase']!r:.40}")

    def _apply(self, vcpus: Vcpus, req: dict, timeout: float, reply) -> replies.Reply:
        instance, details = req["instance"], req["details"]
        deadline = time.monotonic() + timeout
        op_id, owner = str(details.get(operations.OPERATION_DETAIL) or ""), str(
            details.get("owner") or "")
        event = req["event"] if req["event"] in scaling.EVENTS else ""
        change = scaling.cpu_set(details.get("change")) or frozenset()
        if not event or not change:
            return reply(replies.INVALID, "an apply names its event and the vCPUs to change")
        view = vcpus.view(timeout)
        up = event == scaling.SCALE_UP
        after = scaling.after(event, view.online, change)
        wrong = change & view.online if up else change - view.online
        if wrong or not change <= view.plugged or 0 not in after:
            return reply(protocol.REJECT, f"vCPUs {cpu_list(change)} cannot be brought "
                         f"{'online' if up else 'offline'}: online now {cpu_list(view.online)}",
                         **_data(view))
        planned = {"change": sorted(change), "after": sorted(after), "host": self.host}
        if not owner or not (
                redis_schema.update_operation(self.redis, instance, op_id,
                                              [operations.FORWARDING], planned, holding=owner)
                if op_id else redis_schema.lock_owner(self.redis, instance) == owner):
            return reply(protocol.REJECT, f"{event} of {instance} is not being carried out "
                         "any more (its negotiation lost the server, or it was closed)")
        try:
            done = vcpus.apply(change, up, max(deadline - time.monotonic(), 0.1))
        except (ScaleError, GuestAgentError) as exc:
            why = f"{event} failed in the guest: {exc}"
            self._put_back(vcpus, instance, view, deadline)
            if op_id:
                redis_schema.update_operation(self.redis, instance, op_id,
                                              [operations.FORWARDING],
                                              {"state": operations.REFUSED, "why": why})
            LOG.warning("instance %s: %s", instance, why)
            self._audit(instance, event, "failed", why, operation=op_id)
            return reply(protocol.REJECT, why, **_data(view))
        why = (f"vCPUs {cpu_list(change)} {'online' if up else 'offline'}; online now "
               f"{cpu_list(done.online)} of {len(done.plugged)}")
        # The count first: an agent stopped before the record is settled still leaves the
        # record's plan, which the guest's view confirms (Endings).
        redis_schema.record_vcpus(self.redis, instance, len(done.online), len(done.plugged),
                                  op_id)
        if op_id:
            redis_schema.update_operation(self.redis, instance, op_id, [operations.FORWARDING],
                                          {"state": operations.FORWARDED, "why": why})
        LOG.info("instance %s: %s (operation %s)", instance, why, op_id)
        self._audit(instance, event, cpu_list(done.online), why, operation=op_id)
        return reply(protocol.ACCEPT, why, **_data(done))

    def _put_back(self, vcpus: Vcpus, instance: str, before: View, deadline: float) -> None:
        """After a failed change: the vCPUs that did change, back as they were."""
        try:
            now = vcpus.view(max(deadline - time.monotonic(), 0.1)).online
            if now - before.online:
                vcpus.apply(now - before.online, False, max(deadline - time.monotonic(), 0.1))
            if before.online - now:
                vcpus.apply(before.online - now, True, max(deadline - time.monotonic(), 0.1))
        except (ScaleError, GuestAgentError) as exc:
            LOG.warning("instance %s: vCPUs not put back to %s after the failure: %s",
                        instance, cpu_list(before.online), exc)

    def booted(self, instance: str) -> None:
        """The guest answers after a boot: its recorded count, taken back (on a worker)."""
        try:
            recorded = redis_schema.vcpus_of(self.redis, instance)
            # An operation in flight (a scale's own apply, which records the new count
            # after changing the vCPUs) must not be undone with the count before it.
            busy = recorded is not None and redis_schema.lock_owner(self.redis, instance)
        except redis.RedisError as exc:
            LOG.warning("instance %s: recorded vCPU count not read (%s); not re-applied",
                        instance, exc)
            return
        if recorded is None:
            return
        if busy:
            LOG.info("instance %s: an operation is being negotiated; the recorded %d vCPU(s) "
                     "online are not re-applied now", instance, recorded["online"])
            return
        try:
            vcpus = self._vcpus(instance)
            view = vcpus.view(scaling.READ_TIMEOUT)
            wanted = min(max(recorded["online"], 1), len(view.plugged))
            if wanted == len(view.online):
                return
            if wanted < len(view.online):
                change, up = scaling.to_offline(view.online, len(view.online) - wanted), False
            else:
                change = scaling.to_online(view.online, view.plugged, wanted - len(view.online))
                up = True
            done = vcpus.apply(change, up, scaling.APPLY_TIMEOUT)
        except (ScaleError, GuestAgentError) as exc:
            LOG.warning("instance %s: the recorded %d vCPU(s) online not re-applied: %s",
                        instance, recorded["online"], exc)
            return
        why = (f"the recorded count re-applied after a boot: {len(done.online)} of "
               f"{len(done.plugged)} vCPUs online ({cpu_list(done.online)})")
        if wanted != recorded["online"]:
            why += f", clamped from {recorded['online']} to the vCPUs the guest has"
        LOG.info("instance %s: %s", instance, why)
        try:
            if wanted != recorded["online"]:
                redis_schema.record_vcpus(self.redis, instance, wanted, len(done.plugged),
                                          recorded.get("operation", ""))
        except redis.RedisError as exc:
            LOG.warning("instance %s: the clamped count not recorded: %s", instance, exc)
        self._audit(instance, REAPPLY, cpu_list(done.online), why)

    def _audit(self, instance: str, event: str, outcome: str, why: str, **extra) -> None:
        try:
            redis_schema.audit(self.redis, audit.SCALE, instance, event=event, outcome=outcome,
                               why=why, host=self.host, **extra)
        except (redis.RedisError, OSError) as exc:
            LOG.warning("instance %s: audit event lost (%s): %s", instance, exc, why)


def _data(view: View) -> dict:
    return {"online": sorted(view.online), "plugged": sorted(view.plugged)}
