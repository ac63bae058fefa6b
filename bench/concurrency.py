"""1,000 negotiations in flight in one proxy process: bounded Redis connections, deadlines kept.

One GuestChannel (what each novaproxy-api process has) with the default pool of
32 connections; 1,000 threads ask at once, as 1,000 waiting requests would:
- 900 go to a host without an agent, so they must all end at their deadline
  (timeout + reply grace) and not later;
- 100 go to a real novaproxy-agent serving 4 real guests (qemu-ga + guestd, an
  application accepting at once), and must come back accepted.
Redis's CLIENT LIST is sampled meanwhile to count this process's connections.

    .venv/bin/python -m bench.concurrency [--inflight 1000] [--timeout 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid

import redis

from bench._stats import machine, percentile, summary_ms
from guestd import protocol
from guestd.client import Application, Vote
from harness.guest import REPO, Guest, write_guestd_ctl
from harness.processes import Process
from harness.redis_server import RedisServer
from novaproxy.api import policy
from novaproxy.api._guest import REPLY_GRACE, GuestChannel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflight", type=int, default=1000)
    parser.add_argument("--answered", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--spread", type=float, default=1.0,
                        help="seconds over which the requests arrive")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    threading.stack_size(256 * 1024)
    workdir = tempfile.mkdtemp(prefix="np-bench-")
    server = RedisServer(os.path.join(workdir, "redis"))
    sockets = os.path.join(workdir, "qga")
    os.makedirs(sockets)
    guests = [Guest(str(uuid.uuid4()), sockets, os.path.join(workdir, f"g{i}")) for i in range(4)]
    for guest in guests:
        Application("app", on_vote=lambda n: Vote.accept(),
                    socket_path=guest.guestd_socket).start().registered.wait(5)
    config = os.path.join(workdir, "agent.ini")
    with open(config, "w") as f:
        f.write(f"[agent]\nhost = busy-host\nredis_url = {server.url}\nhypervisor = qga-socket\n"
                f"qga_socket_dir = {sockets}\nguestd_ctl = "
                f"{write_guestd_ctl(os.path.join(workdir, 'ctl'))[0]}\n")
    agent = Process([sys.executable, "-m", "novaproxy.agent.service", "--config", config],
                    os.path.join(workdir, "agent.log"), {**os.environ, "PYTHONPATH": REPO})
    try:
        time.sleep(1.5)
        channel = GuestChannel(server.url, max_connections=32,
                               command_timeout=policy.DEFAULT_REDIS_TIMEOUT)
        channel.redis.ping()
        admin = redis.Redis.from_url(server.url, decode_responses=True)
        peak = [0]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                names = [c.get("name", "") for c in admin.client_list()]
                peak[0] = max(peak[0], sum(n.startswith("novaproxy-api") for n in names))
                time.sleep(0.05)

        results = [None] * args.inflight
        barrier = threading.Barrier(args.inflight + 1)

        def ask(i, position):
            answered = i < args.answered
            host = "busy-host" if answered else "host-without-agent"
            instance = guests[i % len(guests)].instance if answered else str(uuid.uuid4())
            req = protocol.request(uuid.uuid4().hex, instance, "reboot", "vote", args.timeout)
            barrier.wait()
            # Arrivals spread over the first second, as requests reach a proxy; all
            # are still in flight together (the vote timeout is longer).
            time.sleep(position * args.spread / args.inflight)
            started = time.monotonic()
            reply = channel.ask(host, req)
            results[i] = (answered, reply.outcome, time.monotonic() - started)

        # Answered and unanswered requests interleave in arrival order.
        order = sorted(range(args.inflight), key=lambda i: (i * 7919) % args.inflight)
        threads = [threading.Thread(target=ask, args=(i, position))
                   for position, i in enumerate(order)]
        for thread in threads:
            thread.start()
        sampler = threading.Thread(target=sample)
        sampler.start()
        barrier.wait()
        for thread in threads:
            thread.join()
        sampling.set()
        sampler.join()

        deadline = args.timeout + REPLY_GRACE
        late = [elapsed - deadline for answered, outcome, elapsed in results if not answered]
        ok = [elapsed for answered, outcome, elapsed in results if answered]
        outcomes = {}
        for answered, outcome, _ in results:
            key = f"{'answered' if answered else 'unanswered'}:{outcome}"
            outcomes[key] = outcomes.get(key, 0) + 1
        print(f"\n[{args.inflight} negotiations in flight, vote timeout {args.timeout:g}s]")
        print(f"  outcomes: {outcomes}")
        print(f"  unanswered, end past deadline: p50={percentile(late, 50) * 1000:.1f}ms "
              f"p99={percentile(late, 99) * 1000:.1f}ms max={max(late) * 1000:.1f}ms "
              f"(target: none over 50 ms)")
        print(f"  answered by the guests: {summary_ms(ok)}")
        print(f"  peak Redis connections of this process: {peak[0]} "
              f"(pool 32 + 1 reader)")
    finally:
        agent.stop()
        for guest in guests:
            guest.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
