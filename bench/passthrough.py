"""Pass-through overhead of novaproxy-api, as a ratio against the same upstream called directly.

The proxy runs as in production (novaproxy-api, cheroot, etc/paste.ini:
negotiation filter + forward app) in front of two upstreams, in the same run:
- a minimal WSGI app on cheroot answering a small JSON body (so the proxy's own
  cost is not hidden behind the upstream's), and
- the real Nova API (nova's functional fixtures), GET /v2.1/flavors/detail.

Latency: sequential requests on a kept-alive connection (p50/p90/p99).
Throughput: 8 client threads for a fixed time, direct vs through the proxy.

    .venv/bin/python -m bench.passthrough [--requests 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import urllib3
from cheroot import wsgi

from bench._stats import machine, percentile, rss_mb, summary_ms
from harness.processes import free_port
from harness.stack import Stack

BODY = b'{"flavors": [{"id": "1", "name": "m1.tiny"}]}'


def small_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]


def latencies(direct: str, proxied: str, headers: dict, count: int) -> tuple:
    """Alternate direct and proxied requests, so drift in the upstream hits both alike."""
    pools = urllib3.PoolManager(maxsize=1), urllib3.PoolManager(maxsize=1)
    samples = [], []
    for i in range(count + 50):
        for side, url in enumerate((direct, proxied)):
            started = time.perf_counter()
            resp = pools[side].request("GET", url, headers=headers)
            if i >= 50:  # after warm-up
                samples[side].append(time.perf_counter() - started)
            assert resp.status == 200, resp.status
    return samples


def throughput(url: str, headers: dict, seconds: float, threads: int = 8) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i):
        pool = urllib3.PoolManager(maxsize=1)
        while time.monotonic() < stop:
            pool.request("GET", url, headers=headers)
            done[i] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / seconds


def compare(name: str, direct: str, proxied: str, headers: dict, args) -> None:
    d, p = latencies(direct, proxied, headers, args.requests)
    added = percentile(p, 50) - percentile(d, 50)
    print(f"\n[{name}]")
    print(f"  direct   {summary_ms(d)}")
    print(f"  proxied  {summary_ms(p)}")
    print(f"  added at p50: {added * 1000:.3f} ms (target <= 0.5 ms)")
    # Two alternating rounds each, for the same reason.
    td = tp = 0.0
    for _ in range(2):
        td += throughput(direct, headers, args.seconds / 2)
        tp += throughput(proxied, headers, args.seconds / 2)
    print(f"  throughput, 8 clients: direct {td / 2:.0f}/s, proxied {tp / 2:.0f}/s, "
          f"ratio {tp / td:.1%} (target >= 90%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")

    port = free_port()
    upstream = wsgi.Server(("127.0.0.1", port), small_app, numthreads=16)
    upstream.prepare()
    threading.Thread(target=upstream.serve, daemon=True).start()

    stack = Stack(tempfile.mkdtemp(prefix="np-bench-"), computes=("compute1",))
    try:
        # A second proxy, same pipeline, in front of the small upstream.
        from harness.processes import Process, wait_for
        paste = os.path.join(stack.workdir, "paste-small.ini")
        stack.write_paste(paste)
        text = open(paste).read().replace(stack.nova_url, f"http://127.0.0.1:{port}")
        open(paste, "w").write(text)
        proxy_port = free_port()
        small_proxy = Process([sys.executable, "-m", "novaproxy.api.server", "--paste", paste,
                               "--bind", f"127.0.0.1:{proxy_port}"],
                              os.path.join(stack.workdir, "proxy-small.log"), stack.env)
        wait_for(lambda: urllib3.request("GET", f"http://127.0.0.1:{proxy_port}/").status, 30,
                 "proxy")
        try:
            compare("small upstream: GET /v2.1/flavors (47-byte body)",
                    f"http://127.0.0.1:{port}/v2.1/flavors",
                    f"http://127.0.0.1:{proxy_port}/v2.1/flavors", {}, args)
            print(f"  proxy RSS: {rss_mb(small_proxy.pid):.0f} MB")
        finally:
            small_proxy.stop()
        headers = {"X-Auth-Token": "admin:demo", "OpenStack-API-Version": "compute 2.96"}
        compare("real Nova: GET /v2.1/flavors/detail",
                f"{stack.nova_url}/v2.1/flavors/detail",
                f"{stack.proxy_url}/v2.1/flavors/detail", headers,
                argparse.Namespace(requests=max(args.requests // 4, 100), seconds=args.seconds))
        print(f"  proxy RSS: {rss_mb(stack.proxy_process.pid):.0f} MB")
    finally:
        stack.stop()
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
