"""A soak: hundreds of random operations with random NACKs on several servers, while the
proxy, the agent and Redis are killed, frozen and restarted at random; at the end no
prepare is open and none was closed twice (issue 10).

Each guest runs a :class:`harness.pairing.PairingApp` that rejects a fifth of the votes
and checks the pairing as it hears the notices. The operations go through a
novaproxy-api of the soak's own, which the fault thread SIGKILLs and starts again; the
agent is SIGKILLed and restarted; Redis is restarted (keeping its data: a Redis that
loses its data loses the records, see the README) or frozen for a moment. Callers see
409s, 5xxs and refused connections meanwhile, and carry on. The seed is printed: a
failure can be replayed with NOVAPROXY_SOAK_SEED.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time

import pytest
from keystoneauth1 import exceptions as ks_exceptions
from novaclient import exceptions as nova_exceptions

from guestd.client import Vote
from harness.pairing import PairingApp
from harness.processes import wait_for
from harness.proxies import start_proxy
from novaproxy import redis_schema

pytestmark = pytest.mark.faults

SERVERS = 3
OPERATIONS = 70  # per server
NACKS = 0.2
FAULT_EVERY = (3.0, 8.0)  # seconds between faults, at random
SETTLED = 60.0  # seconds Nova may take to settle a server, faults included
CLOSED = 120.0  # seconds for the last closing notices once the faults stop
# Operation -> what brings the server back, if anything.
KINDS = {"reboot": None, "reboot-hard": None, "stop": "start", "pause": "unpause"}
CALLS = {
    "reboot": lambda nova, sid: nova.servers.reboot(sid),
    "reboot-hard": lambda nova, sid: nova.servers.reboot(sid, reboot_type="HARD"),
    "stop": lambda nova, sid: nova.servers.stop(sid),
    "start": lambda nova, sid: nova.servers.start(sid),
    "pause": lambda nova, sid: nova.servers.pause(sid),
    "unpause": lambda nova, sid: nova.servers.unpause(sid),
}


class Soak:
    def __init__(self, stack, seed: int) -> None:
        self.stack = stack
        self.seed = seed
        self.proxy = start_proxy(stack, "soak")
        self.proxy_lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.faults: collections.Counter = collections.Counter()
        self.stopping = threading.Event()
        self.errors: list = []

    def call(self, kind: str, server_id: str) -> str:
        """One call through the soak's proxy: its outcome, as counted."""
        try:
            CALLS[kind](self.proxy.nova(), server_id)
            outcome = "accepted"
        except nova_exceptions.ClientException as exc:
            outcome = f"HTTP {exc.code}"
        except (ks_exceptions.ConnectionError, ks_exceptions.ConnectFailure,
                ks_exceptions.RetriableConnectionFailure):
            outcome = "proxy down"
        self.calls[outcome] += 1
        return outcome

    def settled(self, server_id: str) -> str:
        """The server's status once Nova is done with it."""
        nova = self.stack.nova(direct=True)

        def done():
            server = nova.servers.get(server_id)
            if getattr(server, "OS-EXT-STS:task_state") is None and server.status in (
                    "ACTIVE", "SHUTOFF", "PAUSED"):
                return server.status
            return None

        return wait_for(done, SETTLED, f"server {server_id} settled", interval=0.2)

    def bring_back(self, kind: str, server_id: str) -> None:
        """Start (unpause) the server through the proxy, again until Nova did it."""
        for attempt in range(40):
            if self.settled(server_id) == "ACTIVE":
                return
            if attempt < 30:
                if self.call(kind, server_id) != "accepted":
                    time.sleep(0.5)
                continue
            try:  # the proxy never took it: Nova directly, unrecorded
                CALLS[kind](self.stack.nova(direct=True), server_id)
            except nova_exceptions.Conflict:
                pass  # it got there meanwhile
        raise AssertionError(f"server {server_id} was not brought back with {kind}")

    def drive(self, server_id: str, rng: random.Random) -> None:
        try:
            for _ in range(OPERATIONS):
                kind = rng.choice(sorted(KINDS))
                if self.call(kind, server_id) == "proxy down":
                    time.sleep(0.5)  # being restarted
                if self.settled(server_id) != "ACTIVE":
                    self.bring_back(KINDS[kind] or "start", server_id)
        except Exception as exc:  # the test fails on it, with the driver's reason
            self.errors.append(f"driver of {server_id}: {exc!r}")

    def inject(self, rng: random.Random) -> None:
        try:
            while not self.stopping.wait(rng.uniform(*FAULT_EVERY)):
                self.fault(rng)
        except Exception as exc:
            self.errors.append(f"fault injector: {exc!r}")

    def fault(self, rng: random.Random) -> None:
        stack = self.stack
        kind = rng.choice(["proxy", "agent", "redis-restart", "redis-freeze"])
        self.faults[kind] += 1
        if kind == "proxy":
            with self.proxy_lock:
                self.proxy.process.signal(signal.SIGKILL)
                self.proxy.stop()
                self.proxy = start_proxy(stack, "soak")
        elif kind == "agent":
            host = stack.computes[0]
            stack.agents[host].signal(signal.SIGKILL)
            stack.restart_agent(host)
        elif kind == "redis-restart":
            stack.redis.restart(keep_data=True)
        else:
            stack.redis.freeze()
            time.sleep(rng.uniform(0.5, 2.0))
            stack.redis.thaw()


def test_soak_leaves_no_prepare_open_and_none_closed_twice(fault_stack, fault_flavor):
    seed = int(os.environ.get("NOVAPROXY_SOAK_SEED") or random.randrange(1 << 30))
    print(f"\nsoak seed {seed} (NOVAPROXY_SOAK_SEED replays it)")
    rng = random.Random(seed)
    soak = Soak(fault_stack, seed)
    apps = {}
    try:
        for n in range(SERVERS):
            server, _ = fault_stack.boot(f"soak-{n}", fault_flavor)
            nacks = random.Random(rng.random())
            apps[server.id] = PairingApp(
                fault_stack.guests[server.id], name=f"soak-{n}",
                verdict=lambda notice, r=nacks: (Vote.reject("soak says no")
                                                 if r.random() < NACKS else Vote.accept()))
        started = time.monotonic()
        drivers = [threading.Thread(target=soak.drive, args=(sid, random.Random(rng.random())),
                                    name=f"soak-{sid}", daemon=True) for sid in apps]
        injector = threading.Thread(target=soak.inject, args=(random.Random(rng.random()),),
                                    daemon=True)
        injector.start()
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join(SERVERS * OPERATIONS * SETTLED)
        soak.stopping.set()
        injector.join(30)
        took = time.monotonic() - started

        client = redis_schema.connect(fault_stack.redis.url)
        wait_for(lambda: not redis_schema.operations_of(client, list(apps)), CLOSED,
                 "every operation record closed")
        for app in apps.values():
            app.wait_closed(CLOSED)
        counts = collections.Counter()
        for app in apps.values():
            counts.update(app.pairing.counts())
        print(f"soak: {sum(soak.calls.values())} calls in {took:.0f}s "
              f"({dict(sorted(soak.calls.items()))}); faults {dict(sorted(soak.faults.items()))}"
              f"; guests heard {dict(sorted(counts.items()))}")
        assert not soak.errors, soak.errors
        for app in apps.values():
            app.pairing.assert_paired()
        assert counts["prepares"] > 0 and counts["doubled"] == 0 and counts["open"] == 0
    finally:
        for app in apps.values():
            app.stop()
        soak.stopping.set()
        soak.proxy.stop()
