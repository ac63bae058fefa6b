"""novaproxy-agent: the daemon on each compute host.

Takes this host's requests from Redis (a consumer group, so a restarted agent
still answers what it had taken) and hands each to :mod:`answer` on a worker,
and publishes which instances it serves (:mod:`routes`). A Redis that comes
back without its data gets the group and the routes back at once, from the
running agent.
With a ``[nova]`` section it also finishes recorded operations (:mod:`endings`)
and monitors the guests whose flavor asks for it (:mod:`watcher`), recovering
the failed ones, and relays server-group messages: out of the guests' outboxes
(:mod:`group_outbox`) and into their inboxes (:mod:`group_inbox`), with the peer state
notices (:mod:`novaproxy.peer_notify`) of what it sees and of lost hosts (:mod:`liveness`).
:class:`Agent` builds these parts and hands each exactly what it uses; none of
them sees the agent itself.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from novaproxy import peer_notify, peers, redis_schema
from novaproxy.agent import (
    answer,
    deliver,
    endings,
    group_inbox,
    group_outbox,
    group_send,
    hypervisor,
    lifecycle_events,
    liveness,
    membership,
    recovery,
    routes,
    scale,
    watcher,
)
from novaproxy.agent import config as agent_config
from novaproxy.agent import masakari as masakari_client
from novaproxy.agent import nova as nova_client

LOG = logging.getLogger("novaproxy.agent")
BLOCK_MS = 1000  # longest wait for new requests; bounds how fast a stop is noticed
# While Redis is unreachable the request loop tries again this often, so that a
# Redis that came back (empty, perhaps) is noticed within it.
REDIS_RETRY = 0.5


class _Outage:
    """One loop's view of Redis: said once when lost, once when back, not every round."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None

    def failed(self, exc: Exception) -> None:
        if self.since is None:
            self.since = time.monotonic()
            LOG.warning("%s: Redis unreachable (%s); retrying until it answers", self.what, exc)

    def ok(self) -> None:
        if self.since is not None:
            LOG.info("%s: Redis answers again after %.1fs", self.what,
                     time.monotonic() - self.since)
            self.since = None


class Agent:
    """The composition root: builds the parts, hands each what it needs, runs its threads."""

    def __init__(self, config: agent_config.AgentConfig, guests, client: redis.Redis,
                 nova=None, masakari=None) -> None:
        self.config = config
        self.redis = client
        self.stopping = threading.Event()
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="deliver")
        self.deliverer = deliver.Deliverer(guests, guestd_ctl=config.guestd_ctl,
                                           host=config.host, spool_dir=config.spool_dir)
        self._routes_now = threading.Event()  # a domain came or went: refresh at once
        self._operations_now = threading.Event()  # libvirt saw a change: check records now
        host = config.host
        self.routes = routes.Routes(client, host, guests, config.route_interval)
        self.watcher = self.notifier = self.liveness = None
        if nova is not None:  # peer notices: who is told is Nova's server groups
            readers = membership.Membership(client, nova)
            self.notifier = peer_notify.Notifier(client, readers, self.routes.redis_now)
            self.liveness = liveness.Liveness(client, host, readers, self.routes.served,
                                              self.notifier.notify, self.stopping)
        tell = self.notifier.notify if self.notifier is not None else None
        self.scaler = scale.Scaler(client, host, guests)
        if nova is not None and config.monitoring.enabled:
            self.watcher = watcher.Watcher(
                client, host, nova,
                recovery.Recovery(client, host, nova, masakari, config.monitoring),
                config.monitoring, guests, self._pool.submit, self.stopping, tell,
                self.scaler.booted)
        self.endings = None
        if nova is not None:
            self.endings = endings.Endings(
                client, host, nova, self.deliverer.deliver, self._pool.submit,
                self._operations_now.set, self.watcher.saw if self.watcher is not None else None,
                tell, self.scaler.online)
        self.outbox = self.inbox = None
        if nova is not None:
            members = membership.Membership(client, nova)
            sender = group_send.Sender(client, members, self.routes.redis_now)
            self.outbox = group_outbox.OutboxPoller(
                client, guests, members, sender, self.deliverer.deliver, self.routes.served,
                self._pool.submit, config.outbox_file, self.stopping, self.routes.redis_now)
            self.inbox = group_inbox.InboxRelay(
                client, host, self.deliverer.deliver, self.routes.served,
                self._pool.submit, self.routes.redis_now, self.stopping)
        self._answerer = answer.Answerer(client, host, self.deliverer.deliver, self.endings,
                                         self.routes.redis_now, self.stopping,
                                         self.scaler.answer)

    # -- the threads ------------------------------------------------------

    def _route_loop(self) -> None:
        outage = _Outage("publishing routes")
        while not self.stopping.is_set():
            try:
                self.routes.refresh()
                outage.ok()
            except (redis.RedisError, OSError) as exc:
                outage.failed(exc)
            except Exception:  # libvirt raises its own error types
                LOG.exception("could not list the guests")
            self._routes_now.wait(self.config.route_interval)
            self._routes_now.clear()

    def on_domain_event(self, instance: str, meaning: lifecycle_events.Meaning) -> None:
        """A libvirt lifecycle event: routes, the monitor, and a prompt for end notices."""
        LOG.info("instance %s: libvirt event %s", instance, meaning.name)
        if meaning.domains_changed:
            self._routes_now.set()
        if self.watcher is not None:
            if meaning.fatal:
                self.watcher.crashed(instance, meaning.name)
            elif meaning.silence is not None:  # None: no news about silence
                self.watcher.libvirt_silence(instance, meaning.silence)
        state = peers.libvirt_state(meaning.name, meaning.fatal)
        if state and self.notifier is not None:
            self.notifier.notify(instance, state, f"libvirt: {meaning.name.lower()}")
        self._operations_now.set()  # an operation may just have completed

    def on_agent_event(self, instance: str, connected: bool, why: str) -> None:
        """The guest agent's channel opened or closed: the monitor's business, and for a
        guest nobody monitors, the moment to take its recorded vCPU count back (a
        monitored one's is taken back at the monitor's first answer after a boot)."""
        LOG.info("instance %s: guest agent %s (%s)", instance,
                 "connected" if connected else "disconnected", why)
        if self.watcher is not None:
            self.watcher.agent_channel(instance, connected, why)
        if connected and (self.watcher is None or not self.watcher.watching(instance)):
            self._pool.submit(self.scaler.booted, instance)

    def _operation_loop(self) -> None:
        outage = _Outage("checking recorded operations")
        while not self.stopping.is_set():
            self._operations_now.wait(self.config.operation_interval)
            self._operations_now.clear()
            try:
                self.endings.check(self.routes.served())
                outage.ok()
            except (redis.RedisError, OSError) as exc:
                outage.failed(exc)
            except Exception:
                LOG.exception("checking recorded operations failed")

    # -- requests ----------------------------------------------------------

    def _restore_state(self) -> None:
        """Redis has lost this host's request group: it restarted without its data, or
        was flushed. Everything the agent keeps in Redis is put back at once."""
        host = self.config.host
        redis_schema.ensure_group(self.redis, host)
        self._routes_now.set()
        self._operations_now.set()
        restored = "the request stream and its group, and routes"
        if self.watcher is not None:
            self.watcher.publish()
            restored += " and monitor views"
        LOG.warning("Redis lost this host's request group (restarted without its data, or "
                    "flushed): %s published again; requests already taken are still answered; "
                    "recorded operations, recovery claims and their rate-limit window were "
                    "lost with it", restored)

    def _take(self, pending: bool) -> list:
        """This host's next requests; none if Redis had lost the group (it is back now)."""
        try:
            return redis_schema.take_requests(self.redis, self.config.host, self.config.host,
                                              pending=pending, block_ms=BLOCK_MS)
        except redis.ResponseError as exc:
            if not redis_schema.is_missing_group(exc):
                raise
        self._restore_state()
        return []

    def run(self) -> None:
        host = self.config.host
        redis_schema.ensure_group(self.redis, host)
        self.routes.refresh()
        threading.Thread(target=self._route_loop, name="routes", daemon=True).start()
        if self.endings is not None:
            threading.Thread(target=self._operation_loop, name="operations",
                             daemon=True).start()
        else:
            LOG.warning("no [nova] section: operations are not followed to their end, so "
                        "guests get no end notices, and no guest is monitored")
        if self.watcher is not None:
            threading.Thread(target=self.watcher.run, name="monitor", daemon=True).start()
        if self.outbox is not None:
            threading.Thread(target=self.outbox.run, name="group-outbox", daemon=True).start()
            threading.Thread(target=self.inbox.run, name="group-inbox", daemon=True).start()
        if self.liveness is not None:
            threading.Thread(target=self.liveness.run, name="liveness", daemon=True).start()
        if self.config.hypervisor == "libvirt":
            events = lifecycle_events.LibvirtEvents(self.config.libvirt_uri,
                                                    self.on_domain_event, self.stopping,
                                                    self.on_agent_event)
            threading.Thread(target=events.run, name="libvirt-events", daemon=True).start()
        LOG.info("agent for host %s ready: %d instance(s), guests via %s, requests from %s",
                 host, len(self.routes.served()), self.config.hypervisor,
                 redis_schema.redact(self.config.redis_url))
        pending = True  # first, whatever a previous run took and did not finish
        outage = _Outage("reading requests")
        while not self.stopping.is_set():
            try:
                entries = self._take(pending)
            except (redis.RedisError, OSError) as exc:
                outage.failed(exc)
                self.stopping.wait(REDIS_RETRY)
                continue
            outage.ok()
            if pending and entries:
                LOG.info("resuming %d request(s) left unfinished", len(entries))
            pending = False
            for entry_id, raw, reply_to in entries:
                self._pool.submit(self._answerer.handle, entry_id, raw, reply_to)
        self._pool.shutdown(wait=True, cancel_futures=False)
        LOG.info("agent for host %s stopped", host)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novaproxy-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="agent INI file ([agent] section)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = agent_config.load(args.config)
    except agent_config.ConfigError as exc:
        print(f"novaproxy-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    # One connection per delivery worker, the request loop, the route refresher, the
    # operation checker, the monitor (whose threads use Redis only on transitions) and
    # the two group-messaging threads.
    client = redis_schema.connect(config.redis_url, max_connections=config.workers + 6,
                                  client_name=f"novaproxy-agent-{config.host}")
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"novaproxy-agent: cannot reach Redis at {redis_schema.redact(config.redis_url)}: "
              f"{exc}", file=sys.stderr)
        return 2
    try:
        guests = hypervisor.from_config(config)
    except Exception as exc:  # libvirt raises its own error types
        print(f"novaproxy-agent: cannot reach the hypervisor ({config.hypervisor}): {exc}",
              file=sys.stderr)
        return 2
    nova = masakari = None
    try:
        if config.nova:
            nova = nova_client.from_section(config.nova)
        if config.masakari:
            masakari = masakari_client.from_section(config.masakari)
    except nova_client.ConfigError as exc:
        print(f"novaproxy-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    agent = Agent(config, guests, client, nova, masakari)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: agent.stopping.set())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
