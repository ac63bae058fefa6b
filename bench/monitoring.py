"""Monitoring at the defaults (1 s guest-ping, failure after 3 misses): detection latency,
time to the recovery request, false positives under CPU saturation, and the agent's cost.

The whole system on real components (harness.stack): the Nova fixture, one agent
per compute host, and per server a real qemu-ga + guestd guest.

1. cost: ``--guests`` monitored guests, all healthy; each agent's CPU time over
   ``--cost-seconds`` (from /proc), per monitored VM, and its RSS.
2. detection: ``--hangs`` times, one guest's qemu-ga is SIGSTOPped at a known
   moment; the failure audit event's time minus that moment is the detection
   latency, and the recovery event (Nova hard reboot requested) follows it.
   The guest is thawed once Nova has the reboot.
3. soak: ``--soak-minutes`` with every CPU saturated by busy loops; every failure
   declared meanwhile is a false positive (target: 0).

    .venv/bin/python -m bench.monitoring [--guests 100] [--hangs 30] [--soak-minutes 30]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid

from bench._stats import machine, percentile, rss_mb
from harness.audit import wait_state
from harness.processes import wait_for
from harness.stack import Stack
from novaproxy import audit, redis_schema
from novaproxy.agent import monitor

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def events(client, kind: str, since: float) -> list:
    return [f for _, f in redis_schema.read_events(client, 20_000)
            if f["kind"] == kind and float(f["time"]) >= since]


def burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def seconds(samples: list) -> str:
    return " ".join(f"p{p}={percentile(samples, p):.2f}s" for p in (50, 90, 99)) + \
        f" max={max(samples):.2f}s (n={len(samples)})"


def induce_hang(stack, client, server) -> tuple:
    """Hang one guest; (hang -> failure declared, failure -> recovery requested) seconds."""
    guest = stack.guests[server.id]
    reboots = stack.instance_actions(server.id).count("reboot")
    hung_at = time.time()
    guest.hang()

    def first(kind: str) -> dict:
        return wait_for(lambda: [e for e in events(client, kind, hung_at)
                                 if e["instance"] == server.id], 30, f"the {kind}")[0]

    failure, recovery = first(audit.FAILURE), first(audit.RECOVERY)
    wait_for(lambda: stack.instance_actions(server.id).count("reboot") > reboots, 30,
             "the reboot", interval=0.2)
    guest.unhang()
    wait_state(stack, server.id, monitor.HEALTHY, timeout=30)
    return float(failure["time"]) - hung_at, float(recovery["time"]) - float(failure["time"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100)
    parser.add_argument("--hangs", type=int, default=30)
    parser.add_argument("--cost-seconds", type=float, default=60.0)
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=None,
                        help="guest:monitoring_interval of the flavor (default: the agent's 1 s)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    # Many recoveries per VM here; the rate limit is what the tests check.
    stack = Stack(tempfile.mkdtemp(prefix="np-bench-"),
                  monitoring={"max_recoveries": 1000, "recovery_timeout": 30}, log=print)
    try:
        client = redis_schema.connect(stack.redis.url)
        specs = {"guest:monitoring": "true"}
        if args.interval:
            specs["guest:monitoring_interval"] = str(args.interval)
        flavor = stack.flavor(f"bench-{uuid.uuid4().hex[:6]}", specs)
        started = time.monotonic()
        servers = []
        for i in range(args.guests):
            servers.append(stack.boot(f"bench-{i}", flavor)[0])
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{args.guests} guests booted "
                      f"({time.monotonic() - started:.0f}s)", flush=True)
        wait_for(lambda: sum(v.get("state") == "healthy" for v in
                             redis_schema.all_monitored(client).values()) == args.guests,
                 120, "every guest healthy", interval=0.5)
        print(f"{args.guests} guests monitored and healthy")

        # 1. cost
        agents = {host: process.popen.pid for host, process in stack.agents.items()}
        per_host = {host: sum(1 for v in redis_schema.all_monitored(client).values()
                              if v.get("host") == host) for host in agents}
        before = {host: cpu_seconds(pid) for host, pid in agents.items()}
        time.sleep(args.cost_seconds)
        for host, pid in agents.items():
            used = (cpu_seconds(pid) - before[host]) / args.cost_seconds
            vms = max(per_host[host], 1)
            print(f"cost on {host}: {per_host[host]} VMs, agent {used * 100:.2f}% of a core "
                  f"= {used * 100 / vms:.3f}% per VM, RSS {rss_mb(pid):.0f} MB")

        # 2. detection
        latencies, to_recovery = [], []
        for n in range(args.hangs):
            detected, requested = induce_hang(stack, client, servers[n % len(servers)])
            latencies.append(detected)
            to_recovery.append(requested)
        if latencies:
            bound = (args.interval or 1.0) * 4
            print(f"hang -> failure declared: {seconds(latencies)} (bound: interval x 3 "
                  f"misses + one interval = {bound:g} s)")
            print(f"failure -> recovery requested: {seconds(to_recovery)} (target <= 1 s)")

        # 3. soak under saturation
        if args.soak_minutes > 0:
            soak_start = time.time()
            stop_at = soak_start + args.soak_minutes * 60
            burners = [multiprocessing.Process(target=burn, args=(stop_at,))
                       for _ in range(2 * (os.cpu_count() or 1))]
            for b in burners:
                b.start()
            print(f"soak: {len(burners)} busy loops for {args.soak_minutes:g} min", flush=True)
            for b in burners:
                b.join()
            false = events(client, audit.FAILURE, soak_start)
            suspects = [e for e in events(client, audit.MONITOR, soak_start)
                        if e.get("outcome") == "suspect"]
            print(f"soak: {len(false)} failure(s) declared (false positives; target 0), "
                  f"{len(suspects)} single missed-ping episode(s), over "
                  f"{args.guests} guests x {args.soak_minutes:g} min")
            for e in false[:10]:
                print(f"  {e['instance']}: {e.get('why')}")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
