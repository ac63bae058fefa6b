"""Peer state notices: latency from the event to every other member's ``on_peer``.

The whole system on real components (harness.stack): the Nova fixture with two hosts,
one agent per host, novaproxy-api before Nova, a real Nova server group of 3
(soft-anti-affinity, so it spans both hosts), per server a real qemu-ga + guestd, and in
each guest one application of the Python client recording ``on_peer`` with
``time.time()``. The flavor turns on group messaging, monitoring and negotiation.

1. failures: ``--failures`` times, one member (each in turn) hangs (its qemu-ga
   SIGSTOPped, as the integration test does): the monitor tells its group ``suspect``,
   ``failed``, ``recovering`` (Nova's hard reboot requested); thawed, ``healthy``.
2. operations: ``--operations`` soft reboots through novaproxy-api (novaclient), each
   member in turn: ``reboot prepared`` (the proxy, before the prepare) and ``reboot
   ended`` (the agent that judges the end).

Each notice is timed from its ``since`` (Redis's wall time of the event, as its
publisher saw it; one machine, one clock) to each other member's callback, and to the
last of them. Split where the publisher took the peer's seq (``INCR`` of
``novaproxy:{<uuid>}:peer-seq``, seen through a keyspace notification this benchmark
turns on in its own Redis): event -> seq taken (the Notifier's queue, its membership
reads), seq taken -> ``on_peer`` (the ``PEER_NOTICE`` script per recipient, the inbox
relay's wake-up, the spool, guestd, the client). A notice a recipient never got is
counted, not timed: the host keeps only a peer's latest notice for each recipient, so a
newer one may replace it before its delivery, or its publisher did not tell that member.
The three slowest deliveries are printed with the wake-up entries of the recipient's
inbox (from their stream ids) and when its previous notice reached it.

    .venv/bin/python -m bench.peer_notices [--failures 15] [--operations 30]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
import uuid

from bench._stats import machine, percentile
from guestd.client import Application
from guestd.peer_protocol import PeerNotice
from harness.audit import wait_state
from harness.processes import wait_for
from harness.stack import Stack
from novaproxy import flavor, peers, redis_schema
from novaproxy.agent import monitor
from novaproxy.redis_schema import peers as peer_keys
from novaproxy.redis_schema.groups import inbox_key

MONITOR_STATES = (monitor.SUSPECT, monitor.FAILED, monitor.RECOVERING, monitor.HEALTHY)
PREPARED = peers.operation_state("reboot", peers.PREPARED)
ENDED = peers.operation_state("reboot", peers.ENDED)
WARM_UP = 2  # reboots before the timed ones: the proxy's first requests fill its caches
# After a recovery, Nova's hard reboot may still show at the monitor's next Nova read
# (the harness's agents: every 2 s), then its end at the next ping (1 s): quiet, booting,
# and a second ``healthy``. Healthy this long, nothing more comes of that failure.
STEADY = 3.5


class Ears:
    """One member's application: each peer notice and when it reached ``on_peer``."""

    def __init__(self, instance: str, host: str, socket_path: str) -> None:
        self.instance, self.host = instance, host
        self.got: dict = {}  # (peer, seq) -> (time.time() at the callback, PeerNotice)
        self._lock = threading.Lock()
        self.app = Application("bench", on_peer=self._peer, socket_path=socket_path).start()

    def _peer(self, notice: PeerNotice) -> None:
        now = time.time()
        with self._lock:
            self.got[(notice.peer, notice.seq)] = (now, notice)

    def latest(self, peer: str, state: str, after: int) -> PeerNotice | None:
        """The newest notice of ``peer`` in ``state`` with a seq above ``after``."""
        with self._lock:
            found = [n for (p, s), (_, n) in self.got.items()
                     if p == peer and s > after and n.state == state]
        return max(found, key=lambda n: n.seq, default=None)

    def last_seq(self, peer: str) -> int:
        with self._lock:
            return max((s for p, s in self.got if p == peer), default=0)


class SeqTaken:
    """When each peer's seq was taken (``time.time()`` at the keyspace notification of
    its INCR), counted from the subscription: subscribe before any member boots, so the
    n-th INCR of a peer is its seq n."""

    def __init__(self, url: str) -> None:
        self._client = redis_schema.connect(url)
        self._client.config_set("notify-keyspace-events", "K$")  # string commands' keys
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(f"__keyspace@*__:{peer_keys.seq_key('*')}")
        self.at: dict = {}  # (peer, seq) -> time.time()
        self._counts: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="seq-taken", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.5)
            if message is None or message["data"] != "incrby":
                continue
            now = time.time()
            peer = message["channel"].split("{", 1)[1].split("}", 1)[0]
            self._counts[peer] += 1
            self.at[(peer, self._counts[peer])] = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()


def ms(samples: list) -> str:
    if not samples:
        return "(n=0)"
    return " / ".join(f"{percentile(samples, p) * 1000:.0f}" for p in (50, 90, 99)) + \
        f" / {max(samples) * 1000:.0f} ms (n={len(samples)})"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def hang_once(stack: Stack, client, ears: list, subject: Ears) -> None:
    """One failure of ``subject``, until every other member heard it healthy again and
    nothing more is on its way (the next hang must not keep a notice from its guest)."""
    others = [e for e in ears if e is not subject]
    stack.wait_settled(subject.instance)
    before = max(e.last_seq(subject.instance) for e in others)
    guest = stack.guests[subject.instance]
    guest.hang()
    try:
        wait_for(lambda: all(e.latest(subject.instance, monitor.RECOVERING, before)
                             for e in others), 30, "the recovering notice everywhere")
    finally:
        guest.unhang()  # what Nova's hard reboot would have done to a real guest
    recovering = max(e.latest(subject.instance, monitor.RECOVERING, before).seq
                     for e in others)
    wait_for(lambda: all(e.latest(subject.instance, monitor.HEALTHY, recovering)
                         for e in others), 30, "the healthy notice everywhere")
    stack.wait_for_server(subject.instance, "ACTIVE")
    wait_state(stack, subject.instance, monitor.HEALTHY, timeout=30, steady=STEADY)
    wait_for(lambda: not client.exists(*[peer_keys.peers_key(e.instance) for e in ears]), 30,
             "every notice delivered")


def reboot_once(stack: Stack, nova, client, ears: list, subject: Ears) -> None:
    """One soft reboot of ``subject`` through the proxy, until every other member heard
    it ended and the operation's record is gone."""
    others = [e for e in ears if e is not subject]
    stack.wait_settled(subject.instance)
    before = max(e.last_seq(subject.instance) for e in others)
    nova.servers.reboot(subject.instance)
    wait_for(lambda: all(e.latest(subject.instance, ENDED, before) for e in others), 30,
             "the ended notice everywhere")
    stack.wait_for_server(subject.instance, "ACTIVE")
    wait_for(lambda: not redis_schema.operations_of(client, [subject.instance]).get(
        subject.instance), 30, "the reboot's record closed")


def wake_ups(client, recipient: str, start: float, end: float) -> list:
    """When (Redis's clock, from the entry ids) wake-up entries went into ``recipient``'s
    inbox between ``start`` and ``end``: one per notice kept while nothing waited."""
    entries = client.xrange(inbox_key(recipient), int(start * 1000), int(end * 1000) + 1)
    return [int(entry_id.split("-")[0]) / 1000 for entry_id, fields in entries
            if peer_keys.is_wake(fields)]


def report(title: str, client, ears: list, taken: SeqTaken, start: float, end: float,
           expected: dict) -> None:
    """Latencies of the notices published between ``start`` and ``end``, by state
    (``expected``: state -> how many the run caused at least)."""
    hosts = {e.instance: e.host for e in ears}
    notices: dict = {}  # (peer, seq) -> {recipient: (at, notice)}
    for e in ears:
        for key, (at, notice) in list(e.got.items()):
            if start <= notice.since <= end:
                notices.setdefault(key, {})[e.instance] = (at, notice)
    published = [k for k, t in taken.at.items() if start <= t <= end]
    print(f"\n[{title}: {utc()}, {load()}]")
    print(f"  notices published: {len(published)}; reached somebody: {len(notices)}")
    print("  p50 / p90 / p99 / max")
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    slowest = []  # (latency, what)
    missed, counted = collections.Counter(), collections.Counter()
    for (peer, seq), got in sorted(notices.items()):
        state = next(iter(got.values()))[1].state
        state = state if state in expected else "other"
        counted[state] += 1
        row = rows[state]
        since = next(iter(got.values()))[1].since
        for recipient, (at, notice) in got.items():
            row["each"].append(at - since)
            slowest.append((at - since, since, at, recipient,
                            f"{notice.state} ({notice.cause[:40]}) of {peer[:8]} on "
                            f"{hosts[peer]} to {recipient[:8]} on {hosts[recipient]}, seq "
                            f"taken at +{(taken.at.get((peer, seq), since) - since) * 1000:.0f}"
                            " ms"))
            row["same host" if hosts[recipient] == hosts[peer] else "other host"].append(
                at - since)
        recipients = [e.instance for e in ears if e.instance != peer]
        missed[state] += len(recipients) - len(got)
        if len(got) == len(recipients):
            row["last"].append(max(at for at, _ in got.values()) - since)
        if (peer, seq) in taken.at:
            row["published"].append(taken.at[(peer, seq)] - since)
            row["delivered"] += [at - taken.at[(peer, seq)] for at, _ in got.values()]
    everything = collections.defaultdict(list)
    for state in (*expected, "other"):
        row = rows.get(state)
        if not row:
            continue
        for part, samples in row.items():
            everything[part] += samples
        print(f"  {state}: event -> a peer's on_peer {ms(row['each'])}")
        print(f"  {' ' * len(state)}  event -> the last peer's {ms(row['last'])}")
        print(f"  {' ' * len(state)}  {counted[state]} notice(s) received"
              + (f" (the run caused at least {expected[state]})" if state in expected else "")
              + f"; not received at {missed[state]} recipient(s) of those")
    print(f"  all: event -> a peer's on_peer {ms(everything['each'])}")
    print(f"       (recipient on the subject's host {ms(everything['same host'])}; "
          f"on the other host {ms(everything['other host'])})")
    print(f"       event -> the last peer's on_peer {ms(everything['last'])} "
          f"(target p99 <= 1 s: {percentile(everything['last'], 99):.2f} s)"
          if everything["last"] else "       no notice reached every peer")
    print(f"       parts: event -> seq taken {ms(everything['published'])}")
    print(f"              seq taken -> a peer's on_peer {ms(everything['delivered'])}")
    by_instance = {e.instance: e for e in ears}
    for latency, since, at, recipient, what in sorted(slowest, reverse=True)[:3]:
        wakes = ", ".join(f"+{(w - since) * 1000:.0f}"
                          for w in wake_ups(client, recipient, since, at))
        before = max((t for t, _ in list(by_instance[recipient].got.values()) if t < at),
                     default=None)
        previous = f"{(before - since) * 1000:+.0f} ms" if before is not None else "none"
        print(f"  slow: {latency * 1000:.0f} ms, {what}; wake-up entries at [{wakes}] ms; "
              f"the recipient's previous on_peer at {previous}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", type=int, default=15,
                        help="hangs timed, rotating over the 3 members (0: none)")
    parser.add_argument("--operations", type=int, default=30,
                        help="reboots through the proxy timed, rotating (0: none)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"started {utc()}, {load()}")
    # Many recoveries per VM here; the rate limit is what the tests check.
    stack = Stack(tempfile.mkdtemp(prefix="np-bench-"),
                  monitoring={"max_recoveries": 1000, "recovery_timeout": 30}, log=print)
    taken = None
    try:
        taken = SeqTaken(stack.redis.url)
        client = redis_schema.connect(stack.redis.url)
        specs = stack.flavor(f"bench-{uuid.uuid4().hex[:6]}", {
            flavor.GROUP_MESSAGING: "true", flavor.MONITORING: "true",
            flavor.NEGOTIATION: "true"})
        gid = stack.nova(direct=True).server_groups.create(
            f"peers-{uuid.uuid4().hex[:6]}", policy="soft-anti-affinity").id
        ears = []
        for i in range(3):
            server, host = stack.boot(f"peer-{i}", specs, group=gid)
            ears.append(Ears(server.id, host, stack.guests[server.id].guestd_socket))
        for e in ears:
            assert e.app.registered.wait(10), f"{e.instance}: the application registered"
        print(f"group of 3: {', '.join(f'{e.instance[:8]} on {e.host}' for e in ears)}",
              flush=True)
        for e in ears:
            stack.wait_settled(e.instance)

        if args.failures:
            start = time.time()
            for n in range(args.failures):
                hang_once(stack, client, ears, ears[n % len(ears)])
                print(f"  failure {n + 1}/{args.failures} ({time.time() - start:.0f}s)",
                      flush=True)
            report(f"monitor transitions, {args.failures} hangs", client, ears, taken, start,
                   time.time(), dict.fromkeys(MONITOR_STATES, args.failures))
        if args.operations:
            nova = stack.nova()  # through novaproxy-api
            for n in range(WARM_UP):
                reboot_once(stack, nova, client, ears, ears[n % len(ears)])
            start = time.time()
            for n in range(args.operations):
                reboot_once(stack, nova, client, ears, ears[n % len(ears)])
                if (n + 1) % 10 == 0:
                    print(f"  reboot {n + 1}/{args.operations} ({time.time() - start:.0f}s)",
                          flush=True)
            report(f"negotiated reboots through the proxy, {args.operations}", client, ears,
                   taken, start, time.time(),
                   dict.fromkeys((PREPARED, ENDED), args.operations))
        for e in ears:
            e.app.stop()
        client.close()
    finally:
        if taken is not None:
            taken.stop()
        stack.stop()
    print(f"ended {utc()}, {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
