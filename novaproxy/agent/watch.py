"""One monitored VM: its loop, why it may be silent, and what its outcomes lead to.

Its thread pings the guest every interval (a ping waits at most that long, so
a hung guest costs one interval per miss), reads guestd's status file after an
answer, and feeds both to the VM's :class:`~novaproxy.agent.monitor.Monitor`.
A failure the monitor declares goes to :class:`~novaproxy.agent.recovery.Recovery`,
whose outcome goes back to the monitor; every change of state is logged and
audited. News from elsewhere (libvirt's events, Nova's view, the proxy's
records) is routed here by :class:`~novaproxy.agent.watcher.Watcher`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import redis

from novaproxy import audit, redis_schema
from novaproxy.agent import monitor, probe
from novaproxy.agent.guest_agent import GuestAgent, GuestAgentError, Guests
from novaproxy.agent.recovery import Recovery
from novaproxy.monitor_view import MonitorView

LOG = logging.getLogger("novaproxy.agent.watch")
# The monitor states a VM's group is told of (a failure, with its cause, besides).
TOLD = (monitor.SUSPECT, monitor.RECOVERING, monitor.HEALTHY, monitor.LEFT_ALONE)


@dataclass(frozen=True)
class Shared:
    """What every watch on this host uses, handed down by the watcher."""

    client: redis.Redis
    host: str
    guests: Guests  # the hypervisor: guests.agent(instance) is its guest agent client
    status_file: str  # guestd's status file, inside the guest
    recovery: Recovery
    submit: Callable  # submit(fn, *args): run it on the agent's worker pool
    wake: Callable[[], None]  # ask the watcher to re-read Nova now
    stopping: threading.Event  # the agent is stopping
    # tell(instance, state, cause): its group hears of it (peer_notify.Notifier.notify)
    tell: Callable[[str, str, str], None]
    # healthy(instance): the guest answers again (first after a boot, or after a
    # silence): what it must have again is put back (scale.Scaler.booted), on a worker
    healthy: Callable[[str], None] | None = None


@dataclass
class Silences:
    """Why the guest need not answer now, from three sources, each written by its own
    method and read every round: the proxy's operation records (a stop is quiet from
    the moment the proxy forwards it), Nova's view of the server, libvirt's events."""

    host: str
    operations: str = ""
    nova: str = ""
    libvirt: str = ""

    def reason(self) -> str:
        """Why silence is expected now ("" if the guest should answer)."""
        return self.operations or self.nova or self.libvirt

    def from_nova(self, server: dict | None) -> None:
        """A fresh read of the server from Nova (None: Nova no longer knows it)."""
        self.nova = monitor.expected_silence(server, self.host)

    def from_records(self, ops: list | None) -> bool:
        """The instance's operation records, as last read. True if an operation just
        ended: Nova's view is stale then, and stays quiet until Nova is read again."""
        silence = monitor.operation_silence(ops)
        ended = bool(self.operations) and not silence
        if ended:
            self.nova = self.nova or "operation over; reading Nova"
        self.operations = silence
        return ended

    def recorded_since(self, ops: list | None) -> None:
        """The records read again before a miss counts: one may have been added since."""
        if ops:
            self.operations = monitor.operation_silence(ops)

    def from_libvirt(self, reason: str) -> None:
        """A lifecycle event's reason for silence ("" when the guest runs again)."""
        self.libvirt = reason


class Watch:
    """One VM's monitor, fed by its own thread and by the news routed to it."""

    def __init__(self, instance: str, settings: monitor.Settings, shared: Shared,
                 answered_before: bool) -> None:
        self.instance = instance
        self.silences = Silences(shared.host)
        self._shared = shared
        self._monitor = monitor.Monitor(instance, settings, time.monotonic())
        self._monitor.answered_before = answered_before
        # The monitor is fed by this watch's thread, libvirt's event thread and the
        # worker pool, and read by the publisher: one lock around every call.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._probe_now = threading.Event()  # skip the wait: probe at once
        self._status_error = ""  # why the status file could not be read, last time

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True,
                         name=f"monitor-{self.instance[:8]}").start()

    def end(self) -> None:
        self._stop.set()
        self._probe_now.set()

    def retune(self, settings: monitor.Settings) -> None:
        with self._lock:
            if self._monitor.settings != settings:
                self._monitor.settings = settings

    def view(self, now: float, wall: float) -> MonitorView:
        """What operators see; ``now`` monotonic and ``wall`` the same instant's time."""
        m = self._monitor
        with self._lock:
            return MonitorView(
                state=m.state, since=wall - (now - m.since),
                last_answer=None if m.last_answer is None else wall - (now - m.last_answer),
                answered=m.answered_before, misses=m.misses, host=self._shared.host,
                interval=m.settings.interval, quiet=m.quiet_reason,
                unhealthy="; ".join(f"{name}: {reason}" for name, (reason, _) in
                                    sorted(m.unhealthy.items())))

    # -- news from libvirt ----------------------------------------------------

    def crashed(self, event: str) -> None:
        """libvirt says the guest died or froze for good: a failure at once."""
        with self._lock:
            out = self._monitor.crashed(time.monotonic(), event)
        # The recovery calls Nova or Masakari: not on libvirt's event loop thread.
        self._shared.submit(self._outcomes, out)

    def agent_channel(self, connected: bool, why: str) -> None:
        """The guest agent's channel opened (probe at once: the first answer after a
        boot counts from then) or closed (the guest is going down or qemu-ga stopped,
        which a hung guest cannot do: a restart, not a hang)."""
        if not connected:
            with self._lock:
                out = self._monitor.restarting(time.monotonic(),
                                               f"the guest agent disconnected ({why})")
            if out:
                self._shared.submit(self._outcomes, out)
        self._probe_now.set()

    # -- the loop -----------------------------------------------------------------

    def _run(self) -> None:
        """The VM's loop. It never ends on an error: a monitor that silently stops
        working is one of the failures this is built against."""
        while not self._stop.is_set() and not self._shared.stopping.is_set():
            started = time.monotonic()
            interval = self._monitor.settings.interval
            try:
                self._outcomes(self._round(started, interval))
            except redis.RedisError as exc:
                LOG.warning("instance %s: monitor round without Redis: %s", self.instance, exc)
            except Exception:
                LOG.exception("instance %s: monitor round failed; continuing", self.instance)
            self._probe_now.wait(max(started + interval - time.monotonic(), 0.0))
            self._probe_now.clear()

    def _round(self, now: float, interval: float) -> list:
        m = self._monitor
        silence = self.silences.reason()
        with self._lock:
            out = m.quiet(now, silence) if silence else m.active(now)
        if m.state in (monitor.QUIET, monitor.FAILED):
            return out
        try:
            qga = self._shared.guests.agent(self.instance)
            missed = probe.ping(qga, interval)
        except GuestAgentError as exc:  # no socket or domain: the guest is not there
            qga, missed = None, str(exc)
        if missed:
            self._read_records_again()
        if missed and self.silences.operations:  # recorded since the last read: intended
            with self._lock:
                return out + m.quiet(time.monotonic(), self.silences.operations)
        done = time.monotonic()
        with self._lock:
            out += m.missed(done, missed) if missed else m.answered(done)
        if not missed and qga is not None:
            out += self._status(qga, interval)
        with self._lock:
            out += m.tick(time.monotonic())
        return out

    def _read_records_again(self) -> None:
        """Before a miss counts: an operation may have been recorded since the last read."""
        try:
            ops = redis_schema.operations_of(self._shared.client,
                                             [self.instance]).get(self.instance)
        except redis.RedisError:
            return  # the miss counts; the confirmation before any recovery reads again
        self.silences.recorded_since(ops)

    def _status(self, qga: GuestAgent, timeout: float) -> list:
        try:
            status = probe.read_status(qga, self._shared.status_file, timeout)
        except probe.StatusUnreadable as exc:
            if str(exc) != self._status_error:
                LOG.info("instance %s: no guestd status: %s", self.instance, exc)
                self._status_error = str(exc)
            return []
        self._status_error = ""
        with self._lock:
            return self._monitor.status(time.monotonic(), status)

    # -- what outcomes lead to ------------------------------------------------------

    def _outcomes(self, out: list) -> None:
        for item in out:
            if isinstance(item, monitor.Transition):
                self._transition(item)
            else:
                self._failure(item)

    def _transition(self, t: monitor.Transition) -> None:
        log = LOG.warning if t.new in (monitor.SUSPECT, monitor.NEVER_ANSWERED) else LOG.info
        log("instance %s: %s -> %s: %s", self.instance, t.old, t.new, t.why)
        if t.new == monitor.HEALTHY:
            self._shared.recovery.answered(self.instance)
            if self._shared.healthy is not None and t.old != t.new:
                self._shared.submit(self._shared.healthy, self.instance)
        if t.old != t.new and t.new != monitor.FAILED:  # a failure has its own event
            self._audit(audit.MONITOR, event=t.new, outcome=t.new, why=t.why)
            if t.new in TOLD:
                self._shared.tell(self.instance, t.new, t.why)

    def _failure(self, failure: monitor.Failure) -> None:
        LOG.warning("instance %s: failure declared (%s): %s %s", self.instance, failure.cause,
                    failure.why, failure.evidence)
        self._shared.tell(self.instance, monitor.FAILED, failure.cause)
        self._audit(audit.FAILURE, event=failure.cause, outcome=monitor.FAILED,
                    why=failure.why, evidence=failure.evidence, action=failure.action)
        outcome = self._shared.recovery.handle(self.instance, failure)
        with self._lock:
            out = outcome.apply(self._monitor, time.monotonic())
        if outcome.state == monitor.QUIET:
            self._shared.wake()  # Nova says why: read it now
        for t in out:
            self._transition(t)

    def _audit(self, kind: str, **details) -> None:
        try:
            redis_schema.audit(self._shared.client, kind, self.instance,
                               host=self._shared.host, **details)
        except redis.RedisError as exc:
            LOG.warning("instance %s: audit event not written: %s", self.instance, exc)
