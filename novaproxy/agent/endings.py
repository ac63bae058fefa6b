"""Closing recorded operations: each prepare gets exactly one end or abort, in order.

The proxy records every operation before its prepare goes out
(:mod:`novaproxy.operations`). The agent that hosts the VM now (after a
migration, the destination's), and the one it was negotiated on, follow those
records and close them from Nova's evidence: the server, and the instance
action Nova recorded for the operation. ``end`` when it succeeded, ``abort``
when Nova failed it, never acted on it, or the negotiation stopped it.

- An instance's records are closed oldest first, one notice at a time: a newer
  operation's closing never overtakes an older one's.
- A closing notice has the request id :func:`operations.closing_id`, whoever
  sends it, and is claimed before it is sent: guestd delivers a request id at
  most once, so a closing never reaches the applications twice.
- A record whose proxy is gone is decided here: never forwarded (its lock is
  lost before it was marked ``forwarding``), or no Nova action by its
  ``decide_by``: abort; a Nova action found: followed like any other. The
  decision is taken with a compare-and-set on the record, so a proxy that is
  alive after all cannot forward it any more.
- A record that never completes expires with a logged reason.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

import redis

from guestd import protocol
from novaproxy import audit, operations, peers, redis_schema, replies, scaling
from novaproxy.agent.nova import NovaUnavailable

LOG = logging.getLogger("novaproxy.agent.endings")


class Endings:
    def __init__(self, client: redis.Redis, host: str, nova,
                 deliver: Callable[[dict, float], replies.Reply], submit: Callable,
                 wake: Callable[[], None],
                 saw: Callable[[str, dict | None], None] | None = None,
                 tell: Callable[[str, str, str], None] | None = None,
                 guest_vcpus: Callable[[str], frozenset | None] | None = None) -> None:
        """``deliver(req, timeout)`` takes a request to the guest; ``submit(fn, *args)``
        runs on the agent's worker pool; ``wake()`` asks for the next round now;
        ``saw(instance, server)`` passes each read of a server on to the monitor;
        ``tell(instance, state, cause)`` tells its group a prepared operation closed;
        ``guest_vcpus(instance)``: the vCPUs online in the guest (None: unreadable), the
        evidence of a scale operation its proxy left while the agent applied it."""
        self.redis = client
        self.host = host
        self.nova = nova
        self._deliver = deliver
        self._submit = submit
        self._wake = wake
        self._saw = saw
        self._tell = tell
        self._guest_vcpus = guest_vcpus
        self._told: set = set()  # op ids whose closing the group heard of (once each)
        self._busy: set = set()  # (instance, op id) of the notices being delivered now
        self._delivering: set = set()  # op ids whose vote or prepare is being delivered
        # This host's claims: one found for a record not being delivered here is a
        # leftover (a failed delivery, a killed predecessor), taken over.
        self._host_claims = f"agent:{host}:"
        self._guard = threading.Lock()
        self._instance_locks: dict = {}  # instance -> Lock: one judge of its records at a time

    def _lock(self, instance: str) -> threading.Lock:
        with self._guard:
            return self._instance_locks.setdefault(instance, threading.Lock())

    def check(self, served: set) -> None:
        """One round over the records of the instances served or negotiated here.

        An instance that stops being served (powered off, moved away) is still
        followed while it has records: a stop completes when there is no guest
        left to serve, and a record nobody else finishes must still close here.
        """
        client, host = self.redis, self.host
        indexed = redis_schema.recorded_on(client, host)
        records = redis_schema.operations_of(client, served | indexed)
        redis_schema.forget_recorded(client, host, indexed - served - set(records))
        with self._guard:  # instances with no records left need no lock of their own
            for instance in set(self._instance_locks) - set(records):
                if not self._instance_locks[instance].locked():
                    del self._instance_locks[instance]
        for instance, ops in records.items():
            lock = self._lock(instance)
            if lock.acquire(blocking=False):  # else a negotiation is settling it right now
                try:
                    self._instance(instance, ops, inline=False)
                finally:
                    lock.release()

    def before_delivery(self, req: dict, deadline: float) -> str:
        """Before a vote or prepare reaches the guest: the closing notices due for the
        instance's older operations go first (within half the time to ``deadline``, a
        monotonic time), and the request's own operation is not closed while it is
        delivered (call :meth:`after_delivery`). Why not to deliver it ("" to deliver):
        a prepare whose operation was closed meanwhile (its proxy gave up) must not
        reach the guest after its abort."""
        op_id = req["details"].get(operations.OPERATION_DETAIL)
        if op_id:
            self._delivering.add(op_id)
        ops = self._settle_before(req["instance"], deadline)
        if req["phase"] != protocol.PREPARE or not op_id or ops is None:
            return ""
        own = next((op for op in ops if op.get("id") == op_id), None)
        if own is None or own.get("state") != operations.PREPARING:
            return f"its operation {op_id} was closed meanwhile"
        return ""

    def after_delivery(self, req: dict) -> None:
        self._delivering.discard(req["details"].get(operations.OPERATION_DETAIL))

    def _settle_before(self, instance: str, deadline: float) -> list | None:
        """The instance's records once the closings due went out (None if not read)."""
        lock = self._lock(instance)
        if not lock.acquire(timeout=max((deadline - time.monotonic()) / 2, 0)):
            return None
        try:
            while self._busy_of(instance):  # a round's notice is on its way: it goes first
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)
            ops = redis_schema.operations_of(self.redis, [instance]).get(instance)
            if ops:
                self._instance(instance, ops, inline=True,
                               budget=(deadline - time.monotonic()) / 2)
                ops = redis_schema.operations_of(self.redis, [instance]).get(instance)
            return ops or []
        finally:
            lock.release()

    def _busy_of(self, instance: str) -> list:
        return [key for key in list(self._busy) if key[0] == instance]

    def _instance(self, instance: str, ops: list, inline: bool, budget: float = 0.0) -> None:
        """Close what can be closed of one instance's records, oldest first: in a worker
        (one notice per round), or ``inline``, each notice within ``budget`` seconds."""
        ops = [op for op in ops if op.get("event") in operations.LIFECYCLES
               and not self._expired(instance, op)]
        if not ops or self._busy_of(instance):
            return
        # A record its proxy moves on while it is judged here is safe: an undecided one
        # is only settled with a compare-and-set on its state and its proxy's lock.
        owner = redis_schema.lock_owner(self.redis, instance)

        def negotiating(op: dict) -> bool:  # its proxy still holds the server
            return bool(op.get("owner")) and op.get("owner") == owner

        # One still being negotiated holds back the newer ones: no need to ask Nova.
        for i, op in enumerate(ops):
            if op.get("id") in self._delivering or (
                    op.get("state") in (operations.PREPARING, operations.FORWARDING)
                    and negotiating(op)):
                ops = ops[:i]
                break
        if not ops:
            return
        try:
            server = self.nova.server(instance)
            first = ops[0]
            if first.get("state", operations.FORWARDED) == operations.FORWARDED and (
                    operations.progress(first["event"], server) == operations.WAIT):
                actions = []  # Nova is still at it: nothing to decide yet
            else:
                since = min(float(op.get("created", 0)) for op in ops) - operations.CLOCK_SKEW
                actions = self.nova.actions(instance, since) if server else []
        except NovaUnavailable as exc:
            LOG.warning("cannot read instance %s from Nova: %s; retrying", instance, exc)
            return
        if self._saw is not None:
            self._saw(instance, server)  # fresh news for the monitor
        nova_host = (server or {}).get("OS-EXT-SRV-ATTR:host")
        if nova_host and nova_host != self.host:
            return  # Nova has it elsewhere now: that host's agent closes it
        taken = {op["nova_request"] for op in ops if op.get("nova_request")}
        found = []
        try:
            for op in ops:
                action = operations.find_action(op, actions, taken)
                if action is not None:
                    taken.add(action.get("request_id"))
                    if operations.LIFECYCLES[op["event"]].moves and operations.stayed(op, server):
                        # Did it fail, or has Nova not moved the server yet? Its events say;
                        # Nova moves the server before it finishes them, so the server is
                        # read again after them.
                        action = {**action, "events": self.nova.action_events(
                            instance, action.get("request_id", ""))}
                        if not operations.running(action):
                            server = self.nova.server(instance)
                            if not operations.stayed(op, server):
                                return  # it moved meanwhile: judged afresh next round
                found.append(action)
        except NovaUnavailable as exc:
            LOG.warning("cannot read instance %s's actions from Nova: %s; retrying",
                        instance, exc)
            return
        now = time.time()
        for i, op in enumerate(ops):
            # Nova accepted a newer operation since: this one's state is behind it.
            superseded = operations.overtaken(found[i], actions) or any(
                newer.get("state", operations.FORWARDED) == operations.FORWARDED
                or newer_action is not None
                for newer, newer_action in zip(ops[i + 1:], found[i + 1:]))
            verdict = operations.verdict(op, server, found[i], negotiating(op), superseded, now,
                                         self._in_guest(instance, op, negotiating(op)))
            if verdict.decided:  # the guest hears it once it runs; its group now
                self._tell_group(instance, op, verdict.decided, verdict.why)
            if verdict.step == operations.WAIT or not self._close(
                    instance, op, verdict, server, inline, budget):
                return  # the older one first: the rest wait for it

    def _in_guest(self, instance: str, op: dict, negotiating: bool) -> tuple:
        """Where the guest's own view decides (:func:`operations.judged_by_guest`): whether
        the operation happened (:func:`scaling.outcome`); its vCPUs read only then."""
        if not operations.judged_by_guest(op, negotiating):
            return None, ""
        online = self._guest_vcpus(instance) if self._guest_vcpus is not None else None
        return scaling.outcome(op, online)

    def _expired(self, instance: str, op: dict) -> bool:
        if (instance, op.get("id")) in self._busy or time.time() <= op.get("expires", 0):
            return False
        self._finish(instance, op, "expired", f"{op['event']} was not closed before its "
                     "record expired (Nova never completed it, or the guest never ran again "
                     "to hear it); no closing notice was sent")
        return True

    def _close(self, instance: str, op: dict, verdict: operations.Verdict,
               server: dict | None, inline: bool, budget: float) -> bool:
        """Act on a verdict; True if the record is done with, False if its notice is on its
        way or could not be given now: the newer records wait for it."""
        step = verdict.step
        if step in (operations.ABORT, operations.FAILED) and (
                op.get("state") in operations.UNDECIDED):
            if not self._decide(instance, op, verdict.why):
                return False  # its proxy moved it on meanwhile: judged again next round
        if step not in (operations.END, operations.ABORT):  # closed with no notice
            self._finish(instance, op, step, verdict.why)
            return True
        phase = protocol.END if step == operations.END else protocol.ABORT
        self._tell_group(instance, op, step, verdict.why)
        claim = self._host_claims + uuid.uuid4().hex
        timeout = float(op.get("end_timeout", 15))
        if inline:
            timeout = min(timeout, budget)
        if timeout <= 0 or not redis_schema.claim_operation(
                self.redis, instance, op["id"], claim, timeout + 5,
                replaces=self._host_claims):
            return False
        self._busy.add((instance, op["id"]))
        args = (instance, op, phase, timeout, server, claim, verdict.why)
        if inline:
            return self._notify(*args)
        self._submit(self._notify, *args)
        return False

    def _tell_group(self, instance: str, op: dict, step: str, why: str) -> None:
        """Tell the instance's group that a prepared operation ended or was aborted, once
        per operation (by this agent): its guest may take long to hear it, its group not."""
        if self._tell is not None and op.get("prepared") and op["id"] not in self._told:
            self._told.add(op["id"])
            self._tell(instance, peers.operation_state(
                op["event"], peers.ENDED if step == operations.END else peers.ABORTED), why)

    def _decide(self, instance: str, op: dict, why: str) -> bool:
        """Settle a record its proxy left undecided as refused: atomically, and only while
        its negotiation no longer holds the server, so the proxy cannot forward it now."""
        changed = redis_schema.update_operation(
            self.redis, instance, op["id"], [op.get("state")],
            {"state": operations.REFUSED, "why": why}, released=op.get("owner") or "")
        if changed:
            LOG.info("%s of %s (operation %s, %s): %s", op["event"], instance, op["id"],
                     op.get("state"), why)
        return changed

    def _notify(self, instance: str, op: dict, phase: str, timeout: float,
                server: dict | None, owner: str, why: str) -> bool:
        """Deliver a closing notice; True once it reached guestd (the record is done)."""
        try:
            details = (scaling.closing_details(op, phase == protocol.END)
                       if operations.LIFECYCLES[op["event"]].in_guest else op.get("details", {}))
            details = {**details, "status": (server or {}).get("status"),
                       operations.OPERATION_DETAIL: op["id"]}
            req = protocol.request(operations.closing_id(op["id"]), instance, op["event"],
                                   phase, timeout, details)
            reply = self._deliver(req, timeout)
            if reply.outcome in replies.DELIVERED:
                self._finish(instance, op, f"{phase}-delivered",
                             f"{why}; {phase} notice delivered: {reply.outcome}", reply)
                return True
            # The guest does not answer yet (still booting, moving): next round.
            LOG.info("%s notice of %s for %s not delivered yet: %s (%s)", phase,
                     op["event"], instance, reply.outcome, reply.detail)
            redis_schema.release_claim(self.redis, instance, op["id"], owner)
        except (redis.RedisError, OSError) as exc:
            LOG.warning("%s notice of %s for %s: %s", phase, op["event"], instance, exc)
        finally:
            self._busy.discard((instance, op["id"]))
            self._wake()  # the next record of this instance may be due now
        return False

    def _finish(self, instance: str, op: dict, outcome: str, why: str,
                reply: replies.Reply | None = None) -> None:
        client = self.redis
        self._told.discard(op["id"])
        if not redis_schema.finish_operation(client, instance, op["id"]):
            return  # another agent finished it
        # A prepare left open is worth a warning; an announcement nobody heard is not.
        log = LOG.warning if outcome == "expired" and op.get("prepared") else LOG.info
        log("%s of instance %s (operation %s): %s (%s)", op["event"], instance, op["id"],
            outcome, why)
        redis_schema.audit(client, audit.OPERATION, instance, event=op["event"],
                           action=op.get("action", ""), outcome=outcome, why=why,
                           voters=reply.voters if reply else [], host=self.host,
                           operation=op["id"], nova_request=op.get("nova_request", ""))
