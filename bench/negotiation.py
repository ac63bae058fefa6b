"""Negotiation round trip with a guest that answers at once.

Three measurements, same run, real components:
- the guest round trip: proxy side (GuestChannel.ask) → Redis → novaproxy-agent
  → qemu-ga guest-exec → guestd-ctl → guestd → application → and back;
- the caller's view: a reboot NACKed through novaproxy-api over HTTP, which adds
  the server look-up in Nova (a sub-request) and the HTTP hops;
- the caller's view of an accepted reboot: the same vote, then the operation's
  record, the prepare, the record moved to "forwarding", Nova's 202 and the
  record settled; as a ratio to the NACKed one (what the prepare and the
  record of intent cost the caller). Each round waits for the end notice.

    .venv/bin/python -m bench.negotiation [--rounds 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid

import urllib3

from bench._stats import machine, percentile, rss_mb, summary_ms
from guestd import protocol
from guestd.client import Application, Vote
from harness.processes import wait_for
from harness.stack import Stack
from novaproxy import redis_schema
from novaproxy.api import policy
from novaproxy.api._guest import GuestChannel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    stack = Stack(tempfile.mkdtemp(prefix="np-bench-"), computes=("compute1",))
    try:
        flavor = stack.flavor("bench", {"guest:negotiation": "true"})
        server, host = stack.boot("bench", flavor)
        guest = stack.guests[server.id]
        verdict = {"vote": Vote.accept()}
        Application("app", on_vote=lambda n: verdict["vote"],
                    socket_path=guest.guestd_socket).start().registered.wait(5)

        channel = GuestChannel(stack.redis.url, max_connections=8,
                           command_timeout=policy.DEFAULT_REDIS_TIMEOUT)
        samples, outcomes = [], {}
        for _ in range(20):  # warm-up
            channel.ask(host, protocol.request(uuid.uuid4().hex, server.id, "reboot",
                                               "vote", 10.0))
        for _ in range(args.rounds):
            req = protocol.request(uuid.uuid4().hex, server.id, "reboot", "vote", 10.0)
            started = time.perf_counter()
            reply = channel.ask(host, req)
            samples.append(time.perf_counter() - started)
            outcomes[reply.outcome] = outcomes.get(reply.outcome, 0) + 1
        print("\n[guest round trip: vote, one application accepting at once]")
        print(f"  {summary_ms(samples)}  outcomes {outcomes}")
        print(f"  target: p50 <= 20 ms ({percentile(samples, 50) * 1000:.1f}), "
              f"p99 <= 50 ms ({percentile(samples, 99) * 1000:.1f})")

        verdict["vote"] = Vote.reject("benchmark says no")
        pool = urllib3.PoolManager(maxsize=1)
        url = f"{stack.proxy_url}/v2.1/servers/{server.id}/action"
        body = json.dumps({"reboot": {"type": "SOFT"}}).encode()
        headers = {"X-Auth-Token": "admin:demo", "Content-Type": "application/json"}

        def reboots(rounds: int, warm_up: int, status: int, then=lambda: None) -> list:
            """Seconds each reboot through novaproxy-api took, after the warm-up ones."""
            took = []
            for i in range(warm_up + rounds):
                started = time.perf_counter()
                resp = pool.request("POST", url, body=body, headers=headers)
                if i >= warm_up:
                    took.append(time.perf_counter() - started)
                assert resp.status == status, resp.status
                then()
            return took

        http = reboots(args.rounds // 3, 10, 409)
        print("\n[caller's view: reboot NACKed through novaproxy-api over HTTP]")
        print(f"  {summary_ms(http)}  (includes the server look-up in Nova)")

        verdict["vote"] = Vote.accept()
        client = redis_schema.connect(stack.redis.url)

        def over() -> None:  # the next round once the reboot is over and its end delivered
            stack.wait_for_server(server.id, "ACTIVE")
            wait_for(lambda: not redis_schema.operations_of(client, [server.id]), 30,
                     "the reboot's end notice")

        accepted = reboots(args.rounds // 10, 3, 202, then=over)
        print("\n[caller's view: reboot accepted through novaproxy-api over HTTP]")
        print(f"  {summary_ms(accepted)}  (vote, record, prepare, forwarding, Nova's 202)")
        print(f"  p50 {percentile(accepted, 50) / percentile(http, 50):.2f}x the NACKed one's")

        print("\n[memory]")
        print(f"  novaproxy-api RSS {rss_mb(stack.proxy_process.pid):.0f} MB (target <= 100 MB)")
        print(f"  guestd RSS {rss_mb(guest.guestd.pid):.0f} MB (target <= 20 MB)")
        print(f"  novaproxy-agent RSS {rss_mb(stack.agents[host].pid):.0f} MB")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
