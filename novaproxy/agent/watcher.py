"""Which VMs this host monitors, the news for each, and what operators see of them.

Nova's view of the servers on this host decides which VMs are watched (re-read
every ``nova_refresh`` seconds, and at once when a record ends or a watch asks):
a server Nova runs here whose guest is gone must be noticed too. Each watched VM
has its own :class:`~novaproxy.agent.watch.Watch`; this coordinator routes to it
what concerns it (the proxy's operation records every second, libvirt's events,
Nova's reads made elsewhere) and publishes every watch's view for operators.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import redis

from novaproxy import redis_schema
from novaproxy.agent import monitor
from novaproxy.agent.config import MonitoringConfig
from novaproxy.agent.guest_agent import Guests
from novaproxy.agent.nova import NovaError
from novaproxy.agent.recovery import Recovery
from novaproxy.agent.watch import Shared, Watch
from novaproxy.monitor_view import MonitorView

LOG = logging.getLogger("novaproxy.agent.watcher")
PUBLISH_INTERVAL = 2.0  # seconds between refreshes of the monitor views in Redis
VIEW_TTL = 120  # a view outlives its agent this long: a restarted agent picks it up


def _untold(instance: str, state: str, cause: str) -> None:
    """No group to tell (an agent without peer notices)."""


class Watcher:
    def __init__(self, client: redis.Redis, host: str, nova, recovery: Recovery,
                 config: MonitoringConfig, guests: Guests, submit: Callable,
                 stopping: threading.Event, tell: Callable | None = None,
                 healthy: Callable[[str], None] | None = None) -> None:
        self._redis = client
        self._host = host
        self._nova = nova
        self._config = config
        self._stopping = stopping
        self._watches: dict = {}  # instance -> Watch
        self._lock = threading.Lock()
        self._wake = threading.Event()  # re-read Nova now
        self._warned_specs: dict = {}
        self._shared = Shared(client, host, guests, config.status_file, recovery, submit,
                              self._wake.set, stopping, tell or _untold, healthy)

    # -- the roster ------------------------------------------------------------------

    def run(self) -> None:
        """Until the agent stops: Nova every ``nova_refresh`` s, records every second."""
        next_nova = next_publish = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_nova or self._wake.is_set():
                    self._wake.clear()
                    self.refresh()
                    next_nova = now + self._config.nova_refresh
                self._read_operations()
                if now >= next_publish:
                    self.publish()
                    next_publish = now + PUBLISH_INTERVAL
            except (redis.RedisError, OSError) as exc:
                LOG.warning("monitor: Redis: %s", exc)
            except NovaError as exc:
                LOG.warning("monitor: cannot read this host's servers from Nova: %s", exc)
                next_nova = now + min(self._config.nova_refresh, 5.0)
            except Exception:
                LOG.exception("monitor loop failed; continuing")
            self._wake.wait(1.0)
        for _, watch in self._all():
            watch.end()

    def refresh(self) -> None:
        """Start, retune or stop the watches from the servers Nova has on this host."""
        wanted = {}
        for server in self._nova.servers_on_host(self._host):
            specs = (server.get("flavor") or {}).get("extra_specs") or {}
            settings = monitor.settings_from(self._config.defaults, specs)
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
                else:
                    watch.retune(settings)
                watch.silences.from_nova(server)

    def _warn_specs(self, instance: str, specs: dict) -> None:
        bad = monitor.invalid_specs(specs)
        if bad and self._warned_specs.get(instance) != bad:
            LOG.warning("instance %s: flavor extra specs ignored, defaults used: %s", instance,
                        "; ".join(bad))
        self._warned_specs[instance] = bad

    def _start(self, instance: str, settings: monitor.Settings) -> Watch:
        answered = False
        try:
            # A restarted agent (or the migration's destination) knows whether the guest
            # has answered before, so a guest that stays silent is a failure, not new.
            answered = MonitorView.from_fields(
                redis_schema.monitor_view(self._redis, instance)).answered
        except redis.RedisError as exc:
            LOG.warning("instance %s: previous monitor view unreadable: %s", instance, exc)
        watch = Watch(instance, settings, self._shared, answered)
        self._watches[instance] = watch
        LOG.info("instance %s: monitored every %.1fs, failure after %d missed pings, "
                 "recovery %s", instance, settings.interval, settings.threshold,
                 settings.recovery)
        watch.start()
        return watch

    def _all(self) -> list:
        with self._lock:
            return list(self._watches.items())

    def _watch(self, instance: str) -> Watch | None:
        with self._lock:
            return self._watches.get(instance)

    def watching(self, instance: str) -> bool:
        """This agent monitors ``instance`` now (its events and pings count)."""
        return self._watch(instance) is not None

    # -- news, routed to the VM it concerns ----------------------------------------------

    def _read_operations(self) -> None:
        watches = dict(self._all())
        if not watches:
            return
        records = redis_schema.operations_of(self._redis, watches)
        for instance, watch in watches.items():
            if watch.silences.from_records(records.get(instance)):
                self._wake.set()  # an operation ended: Nova's view is stale

    def saw(self, instance: str, server: dict | None) -> None:
        """A fresh read of the server from Nova (the end-notice checker makes them)."""
        watch = self._watch(instance)
        if watch is not None:
            watch.silences.from_nova(server)

    def crashed(self, instance: str, event: str) -> None:
        """A libvirt lifecycle event that means the guest died or froze for good."""
        watch = self._watch(instance)
        if watch is not None:
            watch.crashed(event)
            self._wake.set()

    def libvirt_silence(self, instance: str, reason: str) -> None:
        """A libvirt lifecycle event: why the guest is now expected silent ("" if it runs
        again)."""
        watch = self._watch(instance)
        if watch is not None:
            watch.silences.from_libvirt(reason)
            self._wake.set()

    def agent_channel(self, instance: str, connected: bool, why: str) -> None:
        """libvirt saw the guest agent's channel open or close."""
        watch = self._watch(instance)
        if watch is not None:
            watch.agent_channel(connected, why)

    # -- what operators see ----------------------------------------------------------------

    def publish(self) -> None:
        now, wall = time.monotonic(), time.time()
        views = {instance: watch.view(now, wall).fields() for instance, watch in self._all()}
        if views:
            redis_schema.publish_monitor(self._redis, views, VIEW_TTL)
