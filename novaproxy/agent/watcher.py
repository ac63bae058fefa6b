"""The agent's monitor loop: one thread per monitored instance, feeding its Monitor.

Each thread pings its guest every interval (a ping waits at most that long,
so a hung guest costs one interval per miss), reads guestd's status file after
an answer, and hands the state machine's failures to :mod:`recovery`.

Expected silence comes from three sources and is checked every round: the
operation records the proxy keeps in Redis (a stop is quiet from the moment
the proxy forwards it), Nova's view of the servers on this host (re-read every
``nova_refresh`` seconds, and at once when a record ends), and libvirt's
lifecycle events. A guest that closes its agent channel is restarting: booting
again, with the boot grace to answer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import redis

from novaproxy import audit, redis_schema
from novaproxy.agent import monitor, probe
from novaproxy.agent.config import MonitoringConfig
from novaproxy.agent.guest_agent import GuestAgentError
from novaproxy.agent.nova import NovaError

LOG = logging.getLogger("novaproxy.agent.monitor")
PUBLISH_INTERVAL = 2.0  # seconds between refreshes of the monitor views in Redis
VIEW_TTL = 120  # a view outlives its agent this long: a restarted agent picks it up


@dataclass
class Watch:
    monitor: monitor.Monitor
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    probe_now: threading.Event = field(default_factory=threading.Event)  # skip the wait
    nova_silence: str = ""  # from Nova's view of the server
    ops_silence: str = ""  # from the proxy's operation records
    libvirt_silence: str = ""  # from libvirt's lifecycle events
    recovery_owner: str = ""
    status_error: str = ""  # why the status file could not be read, last time

    def end(self) -> None:
        self.stop.set()
        self.probe_now.set()


class Watcher:
    def __init__(self, agent, nova, recovery, config: MonitoringConfig) -> None:
        self.agent = agent
        self.nova = nova
        self.recovery = recovery
        self.config = config
        self.host = agent.config.host
        self._watches: dict = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()  # re-read Nova now
        self._warned_specs: dict = {}

    # -- the loop that decides what is monitored ------------------------------

    def run(self) -> None:
        """Until the agent stops: Nova every ``nova_refresh`` s, records every second."""
        next_nova = next_publish = 0.0
        while not self.agent.stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_nova or self._wake.is_set():
                    self._wake.clear()
                    self.refresh()
                    next_nova = now + self.config.nova_refresh
                self._read_operations()
                if now >= next_publish:
                    self.publish()
                    next_publish = now + PUBLISH_INTERVAL
            except (redis.RedisError, OSError) as exc:
                LOG.warning("monitor: Redis: %s", exc)
            except NovaError as exc:
                LOG.warning("monitor: cannot read this host's servers from Nova: %s", exc)
                next_nova = now + min(self.config.nova_refresh, 5.0)
            except Exception:
                LOG.exception("monitor loop failed; continuing")
            self._wake.wait(1.0)
        for _, watch in self._all():
            watch.end()

    def refresh(self) -> None:
        """Start, retune or stop the watches from the servers Nova has on this host.

        Nova's view, not the guests found here, decides: a server Nova runs here
        whose guest is gone (QEMU died, the domain vanished) must be noticed too.
        """
        wanted = {}
        for server in self.nova.servers_on_host(self.host):
            specs = (server.get("flavor") or {}).get("extra_specs") or {}
            settings = monitor.settings_from(self.config.defaults, specs)
            self._warn_specs(server["id"], specs)
            if settings is not None:
                wanted[server["id"]] = (settings, server)
        with self._lock:
            for instance in set(self._watches) - set(wanted):
                self._watches.pop(instance).end()
                LOG.info("instance %s: no longer monitored here", instance)
            for instance, (settings, server) in wanted.items():
                watch = self._watches.get(instance)
                if watch is None:
                    watch = self._start(instance, settings)
                elif watch.monitor.settings != settings:
                    with watch.lock:
                        watch.monitor.settings = settings
                watch.nova_silence = monitor.expected_silence(server, self.host)

    def _warn_specs(self, instance: str, specs: dict) -> None:
        bad = monitor.invalid_specs(specs)
        if bad and self._warned_specs.get(instance) != bad:
            LOG.warning("instance %s: flavor extra specs ignored, defaults used: %s", instance,
                        "; ".join(bad))
        self._warned_specs[instance] = bad

    def _start(self, instance: str, settings: monitor.Settings) -> Watch:
        watch = Watch(monitor.Monitor(instance, settings, time.monotonic()))
        try:
            # A restarted agent (or the migration's destination) knows whether the guest
            # has answered before, so a guest that stays silent is a failure, not new.
            if redis_schema.monitor_view(self.agent.redis, instance).get("answered") == "yes":
                watch.monitor.answered_before = True
        except redis.RedisError as exc:
            LOG.warning("instance %s: previous monitor view unreadable: %s", instance, exc)
        self._watches[instance] = watch
        LOG.info("instance %s: monitored every %.1fs, failure after %d missed pings, "
                 "recovery %s", instance, settings.interval, settings.threshold,
                 settings.recovery)
        threading.Thread(target=self._watch, args=(instance, watch), daemon=True,
                         name=f"monitor-{instance[:8]}").start()
        return watch

    def _all(self) -> list:
        with self._lock:
            return list(self._watches.items())

    def watching(self, instance: str) -> bool:
        """This agent monitors ``instance`` now (its events and pings count)."""
        with self._lock:
            return instance in self._watches

    def _read_operations(self) -> None:
        watches = dict(self._all())
        if not watches:
            return
        records = redis_schema.operations_of(self.agent.redis, watches)
        for instance, watch in watches.items():
            ops = records.get(instance)
            silence = monitor.operation_silence(ops)
            if watch.ops_silence and not silence:
                # The operation ended and Nova's view is stale: stay quiet until it is read.
                watch.nova_silence = watch.nova_silence or "operation over; reading Nova"
                self._wake.set()
            watch.ops_silence = silence

    def saw(self, instance: str, server: dict | None) -> None:
        """A fresh read of the server from Nova (the end-notice checker makes them)."""
        watch = dict(self._all()).get(instance)
        if watch is not None:
            watch.nova_silence = monitor.expected_silence(server, self.host)

    def _recheck_operations(self, instance: str, watch: Watch) -> None:
        """Before a miss counts: an operation may have been recorded since the last read."""
        try:
            ops = redis_schema.operations_of(self.agent.redis, [instance]).get(instance)
        except redis.RedisError:
            return  # the miss counts; the confirmation before any recovery reads again
        if ops:
            watch.ops_silence = monitor.operation_silence(ops)

    def lifecycle(self, instance: str, event: str, silence: str | None) -> None:
        """A libvirt lifecycle event: ``silence`` is why the guest is now expected
        silent ("" if it runs again), or None for a crash (the guest died)."""
        watch = dict(self._all()).get(instance)
        if watch is None:
            return
        now = time.monotonic()
        if silence is None:
            with watch.lock:
                out = watch.monitor.crashed(now, event)
            # The recovery calls Nova or Masakari: not on libvirt's event loop thread.
            self.agent.submit(self._outcomes, instance, watch, out)
        else:
            watch.libvirt_silence = silence
        self._wake.set()

    def agent_channel(self, instance: str, connected: bool, why: str) -> None:
        """libvirt saw the guest agent's channel open (probe at once: the first answer
        after a boot counts from then) or close (the guest is going down or qemu-ga
        stopped, which a hung guest cannot do: a restart, not a hang)."""
        watch = dict(self._all()).get(instance)
        if watch is None:
            return
        if not connected:
            with watch.lock:
                out = watch.monitor.restarting(time.monotonic(),
                                               f"the guest agent disconnected ({why})")
            if out:
                self.agent.submit(self._outcomes, instance, watch, out)
        watch.probe_now.set()

    # -- one instance -----------------------------------------------------------

    def _watch(self, instance: str, watch: Watch) -> None:
        """One VM's loop. It never ends on an error: a monitor that silently stops
        working is one of the failures this is built against."""
        while not watch.stop.is_set() and not self.agent.stopping.is_set():
            started = time.monotonic()
            interval = watch.monitor.settings.interval
            try:
                self._outcomes(instance, watch, self._round(instance, watch, started, interval))
            except redis.RedisError as exc:
                LOG.warning("instance %s: monitor round without Redis: %s", instance, exc)
            except Exception:
                LOG.exception("instance %s: monitor round failed; continuing", instance)
            watch.probe_now.wait(max(started + interval - time.monotonic(), 0.0))
            watch.probe_now.clear()

    def _round(self, instance: str, watch: Watch, now: float, interval: float) -> list:
        m = watch.monitor
        silence = watch.ops_silence or watch.nova_silence or watch.libvirt_silence
        with watch.lock:
            out = m.quiet(now, silence) if silence else m.active(now)
        if m.state in (monitor.QUIET, monitor.FAILED):
            return out
        try:
            agent = self.agent.guests.agent(instance)
            missed = probe.ping(agent, interval)
        except GuestAgentError as exc:  # no socket or domain: the guest is not there
            agent, missed = None, str(exc)
        if missed:
            self._recheck_operations(instance, watch)
            if watch.ops_silence:  # recorded since the last read: the silence is intended
                with watch.lock:
                    return out + m.quiet(time.monotonic(), watch.ops_silence)
        done = time.monotonic()
        with watch.lock:
            out += m.missed(done, missed) if missed else m.answered(done)
        if not missed and agent is not None:
            out += self._status(instance, watch, agent, interval)
        with watch.lock:
            out += m.tick(time.monotonic())
        return out

    def _status(self, instance: str, watch: Watch, agent, timeout: float) -> list:
        try:
            status = probe.read_status(agent, self.config.status_file, timeout)
        except probe.StatusUnreadable as exc:
            if str(exc) != watch.status_error:
                LOG.info("instance %s: no guestd status: %s", instance, exc)
                watch.status_error = str(exc)
            return []
        watch.status_error = ""
        with watch.lock:
            return watch.monitor.status(time.monotonic(), status)

    def _outcomes(self, instance: str, watch: Watch, out: list) -> None:
        for item in out:
            if isinstance(item, monitor.Transition):
                self._transition(instance, watch, item)
            else:
                self._failure(instance, watch, item)

    def _transition(self, instance: str, watch: Watch, t: monitor.Transition) -> None:
        log = LOG.warning if t.new in (monitor.SUSPECT, monitor.NEVER_ANSWERED) else LOG.info
        log("instance %s: %s -> %s: %s", instance, t.old, t.new, t.why)
        if t.new == monitor.HEALTHY and watch.recovery_owner:
            redis_schema.release_recovery(self.agent.redis, instance, watch.recovery_owner)
            watch.recovery_owner = ""
        if t.old != t.new and t.new != monitor.FAILED:  # a failure has its own event
            self._audit(audit.MONITOR, instance, event=t.new, outcome=t.new, why=t.why)

    def _failure(self, instance: str, watch: Watch, failure: monitor.Failure) -> None:
        LOG.warning("instance %s: failure declared (%s): %s %s", instance, failure.cause,
                    failure.why, failure.evidence)
        self._audit(audit.FAILURE, instance, event=failure.cause, outcome=monitor.FAILED,
                    why=failure.why, evidence=failure.evidence, action=failure.action)
        try:
            outcome = self.recovery.handle(instance, failure)
        except (redis.RedisError, OSError) as exc:
            # Nothing claimed, nothing done: the failure stands and is declared again.
            LOG.warning("instance %s: cannot recover now: %s", instance, exc)
            outcome = None
        now = time.monotonic()
        with watch.lock:
            if outcome is None:
                out = watch.monitor.recovering(now, "recovery not started (Redis unreachable)")
            elif outcome.state == monitor.QUIET:
                out = watch.monitor.quiet(now, outcome.why)
            elif outcome.state == monitor.LEFT_ALONE:
                out = watch.monitor.left_alone(now, outcome.why)
            else:
                out = watch.monitor.recovering(now, outcome.why)
        if outcome is not None and outcome.owner:
            watch.recovery_owner = outcome.owner
        if outcome is not None and outcome.state == monitor.QUIET:
            self._wake.set()
        for t in out:
            self._transition(instance, watch, t)

    def _audit(self, kind: str, instance: str, **details) -> None:
        try:
            redis_schema.audit(self.agent.redis, kind, instance, host=self.host, **details)
        except redis.RedisError as exc:
            LOG.warning("instance %s: audit event not written: %s", instance, exc)

    # -- what operators see -------------------------------------------------------

    def publish(self) -> None:
        now, wall = time.monotonic(), time.time()
        views = {}
        for instance, watch in self._all():
            m = watch.monitor
            with watch.lock:
                views[instance] = {
                    "state": m.state, "since": f"{wall - (now - m.since):.3f}",
                    "last_answer": "" if m.last_answer is None
                    else f"{wall - (now - m.last_answer):.3f}",
                    "answered": "yes" if m.answered_before else "no", "misses": m.misses,
                    "host": self.host, "interval": m.settings.interval,
                    "quiet": m.quiet_reason,
                    "unhealthy": "; ".join(f"{name}: {reason}" for name, (reason, _) in
                                           sorted(m.unhealthy.items())),
                }
        if views:
            redis_schema.publish_monitor(self.agent.redis, views, VIEW_TTL)
