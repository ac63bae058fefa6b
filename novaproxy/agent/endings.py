"""Finishing recorded operations: the end notice, or the abort, once Nova is done.

The proxy records every operation Nova accepted; the agent that hosts the VM
now (after a migration, the destination's) watches the server in Nova and,
when the operation has settled, tells the guest as soon as it answers again:
``end`` when it succeeded, ``abort`` when it failed after the guest had
prepared for it. A record that never completes expires with a logged reason.
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
DELIVERED = (protocol.ACCEPT, protocol.REJECT, protocol.NOT_NEGOTIATING, redis_schema.INVALID)


class Endings:
    def __init__(self, agent, nova) -> None:
        self.agent = agent
        self.nova = nova
        self._busy: set = set()  # op ids being delivered by this agent right now
        self._followed: set = set()  # instances that left with operations still recorded

    def check(self, served: set) -> None:
        """One round over the recorded operations of the instances served here.

        An instance that stops being served (powered off, moved away) is still
        followed while it has records: a stop completes when there is no guest
        left to serve, and a record nobody else finishes must still expire here.
        """
        client = self.agent.redis
        records = redis_schema.operations_of(client, served | self._followed)
        self._followed = set(records) - served
        for instance, ops in records.items():
            ops = [op for op in ops if op.get("event") in operations.LIFECYCLES
                   and not self._expired(instance, op)]
            if not ops:
                continue
            try:
                server = self.nova.server(instance)
            except NovaUnavailable as exc:
                LOG.warning("cannot read instance %s from Nova: %s; retrying", instance, exc)
                continue
            if self.agent.watcher is not None:
                self.agent.watcher.saw(instance, server)  # fresh news for the monitor
            nova_host = (server or {}).get("OS-EXT-SRV-ATTR:host")
            if nova_host and nova_host != self.agent.config.host:
                continue  # Nova has it elsewhere now: that host's agent finishes it
            for op, step in zip(ops, operations.steps([op["event"] for op in ops], server)):
                self._step(instance, op, step, server)

    def _expired(self, instance: str, op: dict) -> bool:
        if op.get("id") in self._busy or time.time() <= op.get("expires", 0):
            return False
        self._finish(instance, op, "expired", f"{op['event']} did not complete in Nova before "
                     "its record expired; no end notice was sent")
        return True

    def _step(self, instance: str, op: dict, step: str, server: dict | None) -> None:
        op_id, event = op.get("id"), op["event"]
        if op_id in self._busy:
            return
        if step == operations.WAIT:
            return
        if step == operations.SUPERSEDED:
            self._finish(instance, op, "superseded", "Nova has accepted a newer operation")
        elif step == operations.GONE:
            self._finish(instance, op, "gone", "the server no longer exists")
        elif step == operations.END and not op.get("notify", True):
            self._finish(instance, op, "complete", f"Nova reports {server.get('status')}; "
                         "the guest is monitored, not negotiated with: no notice")
        elif step == operations.END and not operations.tells_guest(event, server):
            self._finish(instance, op, "complete",
                         f"Nova reports {server.get('status')}; nothing to tell the guest")
        elif step == operations.ABORT and not op.get("prepared"):
            self._finish(instance, op, "failed",
                         f"Nova settled in {server.get('status')}; the guest was not prepared")
        else:
            phase = protocol.END if step == operations.END else protocol.ABORT
            owner = uuid.uuid4().hex
            timeout = float(op.get("end_timeout", 15))
            if redis_schema.claim_operation(self.agent.redis, instance, op_id, owner,
                                            timeout + 5):
                self._busy.add(op_id)
                self.agent.submit(self._notify, instance, op, phase, timeout, server, owner)

    def _notify(self, instance: str, op: dict, phase: str, timeout: float,
                server: dict, owner: str) -> None:
        try:
            req = protocol.request(uuid.uuid4().hex, instance, op["event"], phase, timeout,
                                   {**op.get("details", {}), "status": server.get("status")})
            reply = deliver.deliver(self.agent.guests, self.agent.config.guestd_ctl, req,
                                    timeout, self.agent.config.host, self.agent.config.spool_dir)
            if reply.outcome in DELIVERED:
                self._finish(instance, op, f"{phase}-delivered",
                             f"{phase} notice delivered: {reply.outcome}", reply)
            else:
                # The guest does not answer yet (still booting, moving): next round.
                LOG.info("%s notice of %s for %s not delivered yet: %s (%s)", phase,
                         op["event"], instance, reply.outcome, reply.detail)
                redis_schema.release_claim(self.agent.redis, instance, op["id"], owner)
        except (redis.RedisError, OSError) as exc:
            LOG.warning("%s notice of %s for %s: %s", phase, op["event"], instance, exc)
        finally:
            self._busy.discard(op["id"])

    def _finish(self, instance: str, op: dict, outcome: str, why: str,
                reply: redis_schema.Reply | None = None) -> None:
        client = self.agent.redis
        if not redis_schema.finish_operation(client, instance, op["id"]):
            return  # another agent finished it
        log = LOG.warning if outcome == "expired" else LOG.info
        log("%s of instance %s: %s (%s)", op["event"], instance, outcome, why)
        redis_schema.audit(client, "operation", instance, event=op["event"],
                           action=op.get("action", ""), outcome=outcome, why=why,
                           voters=reply.voters if reply else [], host=self.agent.config.host)
