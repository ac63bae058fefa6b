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
import time
import uuid

import redis

from guestd import protocol
from novaproxy import operations, redis_schema
from novaproxy.agent import deliver
from novaproxy.agent.nova import NovaUnavailable

LOG = logging.getLogger("novaproxy.agent.endings")


class Endings:
    def __init__(self, agent, nova) -> None:
        self.agent = agent
        self.nova = nova
        self._busy: set = set()  # op ids being delivered by this agent right now

    def check(self, served: set) -> None:
        """One round over the records of the instances served or negotiated here.

        An instance that stops being served (powered off, moved away) is still
        followed while it has records: a stop completes when there is no guest
        left to serve, and a record nobody else finishes must still close here.
        """
        client, host = self.agent.redis, self.agent.config.host
        indexed = redis_schema.recorded_on(client, host)
        records = redis_schema.operations_of(client, served | indexed)
        redis_schema.forget_recorded(client, host, indexed - served - set(records))
        if not records:
            return
        for instance, ops in records.items():
            ops = [op for op in ops if op.get("event") in operations.LIFECYCLES
                   and not self._expired(instance, op)]
            if ops and not any(op.get("id") in self._busy for op in ops):
                self._instance(instance, ops)

    def _instance(self, instance: str, ops: list) -> None:
        """Close what can be closed of one instance's records, oldest first."""
        # Who negotiates is read before Nova: a lock seen free here stays free for
        # these records (a newer negotiation has a newer token).
        owner = redis_schema.lock_owners(self.agent.redis, [instance]).get(instance)
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
        if self.agent.watcher is not None:
            self.agent.watcher.saw(instance, server)  # fresh news for the monitor
        nova_host = (server or {}).get("OS-EXT-SRV-ATTR:host")
        if nova_host and nova_host != self.agent.config.host:
            return  # Nova has it elsewhere now: that host's agent closes it
        taken = {op["nova_request"] for op in ops if op.get("nova_request")}
        found = []
        for op in ops:
            action = operations.find_action(op, actions, taken)
            if action is not None:
                taken.add(action.get("request_id"))
            found.append(action)
        now = time.time()
        for i, op in enumerate(ops):
            # Nova accepted a newer operation since: this one's state is behind it.
            superseded = any(newer.get("state", operations.FORWARDED) == operations.FORWARDED
                             or newer_action is not None
                             for newer, newer_action in zip(ops[i + 1:], found[i + 1:]))
            negotiating = bool(op.get("owner")) and owner == op.get("owner")
            verdict = operations.verdict(op, server, found[i], negotiating, superseded, now)
            if verdict.step == operations.WAIT or not self._close(instance, op, verdict,
                                                                  server):
                return  # the older one first: the rest wait for it

    def _expired(self, instance: str, op: dict) -> bool:
        if op.get("id") in self._busy or time.time() <= op.get("expires", 0):
            return False
        self._finish(instance, op, "expired", f"{op['event']} did not complete in Nova before "
                     "its record expired; no closing notice was sent")
        return True

    def _close(self, instance: str, op: dict, verdict: operations.Verdict,
               server: dict | None) -> bool:
        """Act on a verdict; True if the record is done with, False if a notice is on its
        way (or the record could not be taken): the newer records wait for it."""
        step = verdict.step
        if step in (operations.ABORT, operations.FAILED) and (
                op.get("state") in operations.UNDECIDED):
            if not self._decide(instance, op, verdict.why):
                return False  # its proxy moved it on meanwhile: judged again next round
        if step not in (operations.END, operations.ABORT):  # closed with no notice
            self._finish(instance, op, step, verdict.why)
            return True
        phase = protocol.END if step == operations.END else protocol.ABORT
        owner = uuid.uuid4().hex
        timeout = float(op.get("end_timeout", 15))
        if redis_schema.claim_operation(self.agent.redis, instance, op["id"], owner,
                                        timeout + 5):
            self._busy.add(op["id"])
            self.agent.submit(self._notify, instance, op, phase, timeout, server, owner,
                              verdict.why)
        return False

    def _decide(self, instance: str, op: dict, why: str) -> bool:
        """Settle a record its proxy left undecided as refused: atomically, and only while
        its negotiation no longer holds the server, so the proxy cannot forward it now."""
        changed = redis_schema.update_operation(
            self.agent.redis, instance, op["id"], [op.get("state")],
            {"state": operations.REFUSED, "why": why}, released=op.get("owner") or "")
        if changed:
            LOG.info("%s of %s (operation %s, %s): %s", op["event"], instance, op["id"],
                     op.get("state"), why)
        return changed

    def _notify(self, instance: str, op: dict, phase: str, timeout: float,
                server: dict | None, owner: str, why: str) -> None:
        try:
            details = {**op.get("details", {}), "status": (server or {}).get("status"),
                       operations.OPERATION_DETAIL: op["id"]}
            req = protocol.request(operations.closing_id(op["id"]), instance, op["event"],
                                   phase, timeout, details)
            reply = deliver.deliver(self.agent.guests, self.agent.config.guestd_ctl, req,
                                    timeout, self.agent.config.host, self.agent.config.spool_dir)
            if reply.outcome in redis_schema.DELIVERED:
                self._finish(instance, op, f"{phase}-delivered",
                             f"{why}; {phase} notice delivered: {reply.outcome}", reply)
            else:
                # The guest does not answer yet (still booting, moving): next round.
                LOG.info("%s notice of %s for %s not delivered yet: %s (%s)", phase,
                         op["event"], instance, reply.outcome, reply.detail)
                redis_schema.release_claim(self.agent.redis, instance, op["id"], owner)
        except (redis.RedisError, OSError) as exc:
            LOG.warning("%s notice of %s for %s: %s", phase, op["event"], instance, exc)
        finally:
            self._busy.discard(op["id"])
            self.agent.wake_operations()  # the next record of this instance may be due now

    def _finish(self, instance: str, op: dict, outcome: str, why: str,
                reply: redis_schema.Reply | None = None) -> None:
        client = self.agent.redis
        if not redis_schema.finish_operation(client, instance, op["id"]):
            return  # another agent finished it
        log = LOG.warning if outcome == "expired" else LOG.info
        log("%s of instance %s (operation %s): %s (%s)", op["event"], instance, op["id"],
            outcome, why)
        redis_schema.audit(client, "operation", instance, event=op["event"],
                           action=op.get("action", ""), outcome=outcome, why=why,
                           voters=reply.voters if reply else [], host=self.agent.config.host,
                           operation=op["id"], nova_request=op.get("nova_request", ""))
