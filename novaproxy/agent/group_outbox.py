"""The ``group-outbox`` thread: read the outbox of each messaging VM served here, take
what is new, and acknowledge it to the guest with a receipt.

A VM that starts or stops being served here (booted, stopped, deleted, moved) is read
from Nova into the membership cache at once. Every ``POLL_INTERVAL``, for each served
VM whose flavor turns messaging on, on a
worker of the agent's pool (one at a time per VM): one bounded read of guestd's
outbox file through qemu-ga, parsed strictly (``group_protocol.parse_outbox``); at most
``MAX_TAKEN`` new entries go to :class:`~novaproxy.agent.group_send.Sender`; what
was taken (epoch, seq) and the receipt are stored before the receipt is delivered,
so a restarted agent neither sends a message twice nor forgets a receipt: a receipt
the guest has not acted on (its outbox still holds what was taken) is sent again
before anything new is taken. A hostile outbox costs one bounded read and parse.

Each round also looks (one Redis round trip for all of them) at the final reports the
served VMs are owed: a message of theirs that every recipient had, or that expired
before some did, is reported to its sender (a ``report`` request) within a round.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import redis

from guestd import group_protocol as gp
from guestd.framing import ProtocolError
from novaproxy import groups, redis_schema
from novaproxy.agent import guest_agent
from novaproxy.agent.group_send import Sender
from novaproxy.agent.guest_agent import Guests
from novaproxy.agent.membership import Membership
from novaproxy.agent.nova import NovaError

LOG = logging.getLogger("novaproxy.agent.group_outbox")
READ_TIMEOUT = 2.0  # seconds for one read of an outbox
RECEIPT_TIMEOUT = 5.0  # seconds for the guest to take a receipt, or a final report


class OutboxPoller:
    """Polls the outboxes of the messaging VMs served here (``served``: their ids), each
    on a worker of the agent's pool (``submit``), so a slow guest holds up only itself."""

    def __init__(self, client: redis.Redis, guests: Guests, membership: Membership,
                 sender: Sender, deliver: Callable, served: Callable[[], set],
                 submit: Callable, outbox_file: str, stopping: threading.Event,
                 redis_now: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._guests = guests
        self._membership = membership
        self._sender = sender
        self._deliver = deliver
        self._served = served
        self._submit = submit
        self._outbox_file = outbox_file
        self._stopping = stopping
        self._redis_now = redis_now
        self._reporting = threading.Event()  # a round of final reports runs on the pool
        self._complaints: dict = {}  # instance -> the last problem logged, said once
        self._lock = threading.Lock()
        self._busy: set = set()  # VMs whose poll runs on the pool now

    def run(self) -> None:
        known: set = set()  # the VMs served here at the last round
        while not self._stopping.is_set():
            started = time.monotonic()
            served = self._served()
            for instance in sorted(served ^ known):
                try:  # booted or gone: what the group knows of it is read from Nova now
                    self._submit(self._reread, instance)
                except RuntimeError:
                    return
            known = served
            try:
                # One read for all (the pool reads Nova for those not cached or old).
                members = redis_schema.cached_members(self._redis, sorted(served),
                                                      max_age=redis_schema.GROUP_TTL)
            except (redis.RedisError, OSError) as exc:
                LOG.warning("group messaging: outbox polls: Redis: %s", exc)
                members = {}
            try:
                for instance in sorted(served):
                    member = members.get(instance)
                    if member is not None and not member.messaging:
                        continue  # its flavor does not turn messaging on
                    with self._lock:
                        if instance in self._busy:
                            continue  # its last poll still runs (a slow guest)
                        self._busy.add(instance)
                    self._submit(self._poll_guarded, instance, member is not None)
                if served and not self._reporting.is_set():
                    self._reporting.set()
                    self._submit(self.deliver_reports, sorted(served))
            except RuntimeError:  # the pool shut down: the agent is stopping
                return
            self._stopping.wait(max(0.0, groups.POLL_INTERVAL - (time.monotonic() - started)))

    def _reread(self, instance: str) -> None:
        """Read a VM that came or went from Nova into the membership cache: a member
        deleted no longer gets messages, a new one is added to its cached group."""
        try:
            self._membership.member(instance, fresh=True)
        except (redis.RedisError, OSError) as exc:
            self._complain(instance, f"Redis: {exc}")
        except NovaError as exc:
            self._complain(instance, f"Nova: {exc}")

    def _poll_guarded(self, instance: str, messaging: bool) -> None:
        """:meth:`poll` on a pool worker, for a VM whose flavor turns messaging on
        (``messaging``: the cache says so; else Nova is asked through the cache)."""
        try:
            if messaging or self._membership.member(instance).messaging:
                self.poll(instance)
        except (redis.RedisError, OSError) as exc:
            self._complain(instance, f"Redis: {exc}")
        except NovaError as exc:
            self._complain(instance, f"Nova: {exc}")
        except Exception:
            LOG.exception("instance %s: polling its outbox failed", instance)
        finally:
            with self._lock:
                self._busy.discard(instance)

    def poll(self, instance: str) -> None:
        """One round for one VM: read, resend an unacknowledged receipt, take what is new."""
        outbox = self._read(instance)
        if outbox is None:
            return
        epoch, taken, pending = redis_schema.outbox_progress(self._redis, instance)
        if pending:
            # Sent again while the outbox still holds what they acknowledge; otherwise the
            # guest acted on them (or guestd restarted: a new epoch) and they are done.
            if (groups.unacknowledged(outbox, epoch, taken)
                    and not self._send_receipts(instance, pending)):
                return  # the guest does not answer: nothing new until it does
            redis_schema.set_outbox_progress(self._redis, instance, epoch, taken, [])
        entries = groups.to_take(outbox, epoch, taken)
        if not entries:
            return
        results = self._sender.take(instance, outbox["epoch"], entries)
        receipts = groups.receipts(outbox["epoch"], results)
        redis_schema.set_outbox_progress(self._redis, instance, outbox["epoch"],
                                         entries[-1]["seq"], receipts)
        if self._send_receipts(instance, receipts):
            redis_schema.set_outbox_progress(self._redis, instance, outbox["epoch"],
                                             entries[-1]["seq"], [])

    def deliver_reports(self, instances: list) -> None:
        """Deliver the final reports due to ``instances`` (those not being polled now)."""
        try:
            for instance, owed in redis_schema.open_reports(self._redis, instances).items():
                with self._lock:
                    if instance in self._busy:
                        continue  # next round
                    self._busy.add(instance)
                try:
                    self._report(instance, owed)
                finally:
                    with self._lock:
                        self._busy.discard(instance)
        except (redis.RedisError, OSError) as exc:
            LOG.warning("group messaging: final reports: Redis: %s", exc)
        finally:
            self._reporting.clear()

    def _report(self, instance: str, owed: list) -> None:
        """``owed``: the reports that expire first (a bounded read a round; a report
        waiting for a member that is away holds back none after it for longer than its
        TTL)."""
        now = self._redis_now()
        states_of = redis_schema.reports(self._redis, [(g, m) for g, m, _ in owed], now)
        for (gid, message_id, _expires), states in zip(owed, states_of):
            members = groups.final_report(states) if states else {}
            if members is None:
                continue  # still on its way to someone
            if members:
                reply = self._deliver(groups.report_request(
                    instance, gid, message_id, members, RECEIPT_TIMEOUT), RECEIPT_TIMEOUT)
                if reply.outcome not in groups.ANSWERED:
                    self._complain(instance, f"final report not delivered: {reply.outcome} "
                                             f"{reply.detail}")
                    return  # the guest does not answer: the next round tries again
            redis_schema.close_report(self._redis, instance, gid, message_id)

    def _read(self, instance: str) -> dict | None:
        """The parsed outbox, None when there is none or it cannot be read or parsed."""
        deadline = time.monotonic() + READ_TIMEOUT
        try:
            qga = self._guests.agent(instance)
            data = guest_agent.read_file(qga, self._outbox_file, gp.MAX_OUTBOX_BYTES,
                                         deadline)
        except guest_agent.NotOpened:
            return None  # no outbox: nothing to send
        except guest_agent.GuestAgentUnavailable as exc:  # booting, stopping: the monitor's
            LOG.debug("instance %s: no guest agent to read the outbox from: %s",
                      instance, exc)
            return None
        except guest_agent.GuestAgentError as exc:
            self._complain(instance, f"outbox unreadable: {exc}")
            return None
        try:
            outbox = gp.parse_outbox(data)
        except ProtocolError as exc:
            self._complain(instance, f"outbox invalid, nothing taken: {exc}")
            return None
        self._complaints.pop(instance, None)
        return outbox

    def _send_receipts(self, instance: str, receipts: list) -> bool:
        """Deliver each receipt in order; True once the guest had all of them."""
        for details in receipts:
            reply = self._deliver(groups.receipt_request(instance, details, RECEIPT_TIMEOUT),
                                  RECEIPT_TIMEOUT)
            if reply.outcome not in groups.ANSWERED:
                self._complain(instance, f"receipt not delivered: {reply.outcome} "
                                         f"{reply.detail}")
                return False
        return True

    def _complain(self, instance: str, what: str) -> None:
        """Log a problem once, not at every poll."""
        if self._complaints.get(instance) != what:
            self._complaints[instance] = what
            LOG.warning("instance %s: group messaging: %s", instance, what)
