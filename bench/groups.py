"""Server-group messaging: broadcast latency to the peers' callbacks, and the agent's cost.

The whole system on real components (harness.stack): the Nova fixture with two hosts,
one agent per host, per server a real qemu-ga + guestd, real Nova server groups
(soft-anti-affinity, so members land on both hosts), and in each guest one
application of the Python client (``guestd.client.Application``).

1. latency: a group of 3; ``--messages`` broadcasts, one at a time, each from the next
   member in turn, at a random moment of the outbox poll's interval. Measured from
   ``broadcast()`` returning to each other member's ``on_message`` callback (and to the
   last of them), and split into its parts: the ``broadcast()`` call itself (guestd
   queues the entry and rewrites its outbox), the pickup (returned -> the message's
   ``sent_at``: the sender's agent's Redis clock when it took the entry from the outbox,
   so mostly the poll's phase) and the delivery (``sent_at`` -> callback: the
   recipient's agent's XREAD, the spool, guestd, the client).
2. cost: ``--vms`` VMs in ``--groups`` groups (the flavor turns messaging on, not
   monitoring, unless ``--monitoring``), each agent's CPU time from /proc over
   ``--cost-seconds``, per VM it serves: first with nothing sent (the outbox polls
   alone), then, in the same run, with every VM broadcasting ``--rate`` messages/s.

    .venv/bin/python -m bench.groups [--messages 100] [--vms 100] [--groups 10] [--rate 0.1]
"""

from __future__ import annotations

import argparse
import collections
import functools
import random
import sys
import tempfile
import threading
import time
import uuid

from bench._stats import machine, percentile, rss_mb
from bench.monitoring import cpu_seconds
from guestd.client import Application, GroupMessage, GroupResult
from harness.processes import wait_for
from harness.stack import Stack
from novaproxy import flavor, groups

WARM_UP = 3  # broadcasts before the latency samples: the first ones fill the agents' caches


class Peer:
    """One application in one guest: when each message reached its callback, and the
    host's verdict on what it sent (counted by status and reason)."""

    def __init__(self, instance: str, socket_path: str) -> None:
        self.instance = instance
        self.arrived: dict = {}  # body's "n" -> (time.time() at the callback, GroupMessage)
        self.received = 0
        self.results: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self.app = Application("bench", events=(), on_message=self._message,
                               on_result=self._result, socket_path=socket_path).start()

    def _message(self, message: GroupMessage) -> None:
        now = time.time()
        with self._lock:
            self.received += 1
            if isinstance(message.body, dict) and "n" in message.body:
                self.arrived[message.body["n"]] = (now, message)

    def _result(self, result: GroupResult) -> None:
        with self._lock:
            self.results[f"{result.status} {result.reason}".strip()] += 1


def ms(samples: list) -> str:
    return " ".join(f"p{p}={percentile(samples, p) * 1000:.0f}ms" for p in (50, 90, 99)) + \
        f" max={max(samples) * 1000:.0f}ms (n={len(samples)})"


def members(stack: Stack, name: str, count: int, messaging, offset: int = 0) -> tuple:
    """``count`` servers booted into one new server group, an application in each;
    (group id, [Peer], {instance: host})."""
    gid = stack.nova(direct=True).server_groups.create(
        f"{name}-{uuid.uuid4().hex[:6]}", policy="soft-anti-affinity").id
    peers, hosts = [], {}
    for i in range(count):
        server, host = stack.boot(f"{name}-{offset + i}", messaging, group=gid)
        hosts[server.id] = host
        peers.append(Peer(server.id, stack.guests[server.id].guestd_socket))
    for peer in peers:
        assert peer.app.registered.wait(10), f"{peer.instance}: the application registered"
    return gid, peers, hosts


def arrivals(peers: list, n: int) -> list | None:
    """Each peer's (time, message) for broadcast ``n``, once every one has it."""
    if all(n in p.arrived for p in peers):
        return [p.arrived[n] for p in peers]
    return None


def latency(stack: Stack, messaging, count: int) -> None:
    gid, peers, hosts = members(stack, "latency", 3, messaging)
    print(f"latency group: 3 members on {', '.join(sorted(set(hosts.values())))}", flush=True)
    to_each, to_all, calls, pickups, deliveries = [], [], [], [], []
    for n in range(-WARM_UP, count):
        sender = peers[n % len(peers)]
        others = [p for p in peers if p is not sender]
        # At a random moment, as an application would: sent right after the previous
        # one arrived, each broadcast would land just after a poll and wait a whole one.
        time.sleep(random.uniform(0, groups.POLL_INTERVAL))
        called = time.time()
        sender.app.broadcast({"n": n})
        returned = time.time()
        arrived = wait_for(functools.partial(arrivals, others, n), 30,
                           f"broadcast {n} everywhere", interval=0.01)
        if n < 0:
            continue
        calls.append(returned - called)
        to_all.append(max(at for at, _ in arrived) - returned)
        for at, message in arrived:
            to_each.append(at - returned)
            pickups.append(message.sent_at - returned)
            deliveries.append(at - message.sent_at)
    print(f"\n[broadcast latency, 3 members on two hosts, {count} broadcasts, one at a time]")
    print(f"  broadcast() returned -> a peer's on_message: {ms(to_each)}")
    print(f"  broadcast() returned -> the last peer's on_message: {ms(to_all)} "
          f"(target p99 <= 1 s: {percentile(to_all, 99):.2f} s)")
    print(f"  parts: broadcast() call (outbox written) {ms(calls)}")
    print(f"         returned -> taken by the sender's agent {ms(pickups)}")
    print(f"         taken -> on_message {ms(deliveries)}")
    for peer in peers:
        peer.app.stop()
    # Nova's quota allows 10 server groups: the cost phase needs as many.
    stack.nova(direct=True).server_groups.delete(gid)


def agent_cpu(stack: Stack, seconds: float) -> dict:
    """host -> share of a core its agent used over ``seconds``."""
    pids = {host: process.pid for host, process in stack.agents.items()}
    before = {host: cpu_seconds(pid) for host, pid in pids.items()}
    time.sleep(seconds)
    return {host: (cpu_seconds(pid) - before[host]) / seconds for host, pid in pids.items()}


def report_cost(stack: Stack, what: str, used: dict, per_host: collections.Counter) -> None:
    for host, share in sorted(used.items()):
        vms = max(per_host[host], 1)
        print(f"  {what} on {host}: {per_host[host]} VMs, agent {share * 100:.2f}% of a core "
              f"= {share * 100 / vms:.3f}% per VM (target <= 0.1%), "
              f"RSS {rss_mb(stack.agents[host].pid):.0f} MB", flush=True)


def send_steadily(peers: list, rate: float, stop: threading.Event) -> None:
    """Each peer broadcasts ``rate`` messages/s, the peers' turns spread evenly."""
    gap, turn = 1.0 / (rate * len(peers)), 0
    next_at = time.monotonic()
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        try:
            peers[turn % len(peers)].app.broadcast({"turn": turn})
        except Exception as exc:  # a refusal by guestd: counted as such, keep the pace
            print(f"  broadcast refused by guestd: {exc}", file=sys.stderr)
        turn += 1
        next_at += gap


def cost(stack: Stack, messaging, vms: int, count: int, rate: float, seconds: float) -> None:
    peers, hosts = [], {}
    started = time.monotonic()
    for g in range(count):
        size = vms // count + (g < vms % count)
        _, made, placed = members(stack, f"cost{g}", size, messaging, offset=len(peers))
        peers += made
        hosts.update(placed)
        print(f"  {len(peers)}/{vms} VMs booted in {g + 1} group(s) "
              f"({time.monotonic() - started:.0f}s)", flush=True)
    per_host = collections.Counter(hosts.values())
    time.sleep(min(5.0, seconds))  # every outbox polled once at least, caches filled
    print(f"\n[agent cost: {vms} VMs in {count} groups, CPU time over {seconds:g} s]")
    report_cost(stack, "idle (messaging on, nothing sent)", agent_cpu(stack, seconds), per_host)

    stop = threading.Event()
    sender = threading.Thread(target=send_steadily, args=(peers, rate, stop), daemon=True)
    sender.start()
    time.sleep(min(5.0, seconds))  # into the steady state
    received_before = sum(p.received for p in peers)
    used = agent_cpu(stack, seconds)
    received = sum(p.received for p in peers) - received_before
    report_cost(stack, f"sending {rate:g} msg/s per VM", used, per_host)
    stop.set()
    sender.join()
    time.sleep(3.0)  # what is in flight arrives
    results = sum((p.results for p in peers), collections.Counter())
    print(f"  deliveries during the window: {received / seconds:.1f}/s; host verdicts on "
          f"every broadcast: {dict(results)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100,
                        help="broadcasts timed (0: no latency phase)")
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.1,
                        help="broadcasts per second per VM in the cost phase")
    parser.add_argument("--cost-seconds", type=float, default=60.0)
    parser.add_argument("--monitoring", action="store_true",
                        help="the flavor turns monitoring on too (the cost then includes it)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    stack = Stack(tempfile.mkdtemp(prefix="np-bench-"), log=print)
    try:
        specs = {flavor.GROUP_MESSAGING: "true"}
        if args.monitoring:
            specs["guest:monitoring"] = "true"
        messaging = stack.flavor(f"bench-{uuid.uuid4().hex[:6]}", specs)
        if args.messages:
            latency(stack, messaging, args.messages)
            stack.cleanup()
        if args.vms:  # 0: no cost phase
            cost(stack, messaging, args.vms, args.groups, args.rate, args.cost_seconds)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
