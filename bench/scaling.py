"""vCPU scaling round trips through a real guest: the proxy's cost over guest-set-vcpus.

The vm tier's set-up outside pytest (harness.libvirt_session, harness.vm_guest,
harness.vm_scaling): a session libvirtd, the Nova fixture with one compute in libvirt
mode, and one TCG guest shaped as Nova shapes a 3-vCPU flavor (scaling and negotiation
on, monitoring off, so that no re-apply after a slow ping interferes), with one
application, the vm tier's logging vote hook. Same run, same guest:

1. ``--rounds`` scale-downs (3 → 2) and scale-ups (2 → 3) through novaproxy-api with
   real novaclient, alternating, each timed at the client (the call's duration), the
   next sent once the proxy has given the server back (the end notice delivered).
   A scale-down is the server look-up in Nova, the agent's read of the vCPUs, the vote
   and the prepare through guestd's hook, the agent's apply, the answer; a scale-up
   has a prepare notice and no vote. The vote's and prepare's round trips are read
   from the proxy's audit events.
2. the baseline: the same change made directly with the agent's own
   :meth:`Vcpus.apply <novaproxy.agent.vcpus.Vcpus.apply>` (guest-set-vcpus, then
   guest-get-vcpus to check) through the agent's libvirt client.

    .venv/bin/python -m bench.scaling [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

from bench._stats import machine, percentile
from harness import libvirt_session
from harness.audit import audits
from harness.stack import Stack
from harness.vm_guest import VM_HOST, boot_server
from harness.vm_scaling import FILES, ScaledGuest, scale, wait_given_back
from novaproxy import audit, flavor
from novaproxy.agent import hypervisor
from novaproxy.agent.vcpus import Vcpus

VCPUS = 3
WARM_UP = 2  # round trips of each kind before the samples


def ms(samples: list) -> str:
    return " ".join(f"p{p}={percentile(samples, p) * 1000:.0f}ms" for p in (50, 90)) + \
        f" max={max(samples) * 1000:.0f}ms (n={len(samples)})"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def through_proxy(stack: Stack, guest: ScaledGuest, rounds: int) -> tuple:
    """Seconds each scale-down and scale-up took at the client."""
    nova = stack.nova()
    down, up = [], []
    for i in range(WARM_UP + rounds):
        for step, samples, after in (("down", down, [0, 1]), ("up", up, [0, 1, 2])):
            started = time.monotonic()
            body = scale(nova, guest.id, step=step)
            took = time.monotonic() - started
            assert body["online"] == after, body
            wait_given_back(stack.redis.url, guest.id)
            if i >= WARM_UP:
                samples.append(took)
    return down, up


def directly(vcpus: Vcpus, rounds: int) -> tuple:
    """Seconds each Vcpus.apply of vCPU 2, offline then online, took."""
    down, up = [], []
    for i in range(WARM_UP + rounds):
        for online, samples in ((False, down), (True, up)):
            started = time.monotonic()
            vcpus.apply(frozenset({2}), online, 30)
            if i >= WARM_UP:
                samples.append(time.monotonic() - started)
    return down, up


def phase_times(stack: Stack, instance: str, rounds: int) -> tuple:
    """The proxy's own timings of the last ``rounds`` scale-downs' votes and prepares."""
    votes = [int(e["took_ms"]) / 1000 for e in audits(stack, instance, audit.NEGOTIATION,
                                                        "scale-down")][-rounds:]
    prepares = [int(e["took_ms"]) / 1000 for e in audits(stack, instance, audit.NOTICE,
                                                           "scale-down")
                if e["why"].startswith("prepare sent")][-rounds:]
    return votes, prepares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"start {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {load()}")
    libvirt_session.check_available()
    kernel, _ = libvirt_session.build_image()
    session = libvirt_session.LibvirtSession(kernel, libvirt_session.build_initrd(FILES))
    workdir = tempfile.mkdtemp(prefix="np-bench-")
    stack = hv = None
    try:
        stack = Stack(workdir, computes=(VM_HOST,), libvirt={VM_HOST: session.uri})
        hv = hypervisor.Libvirt(session.uri)
        specs = stack.flavor(f"bench-scale-{uuid.uuid4().hex[:6]}",
                             {"guest:negotiation": "true", flavor.VCPU_SCALING: "true"},
                             vcpus=VCPUS)
        server, domain, agent = boot_server(stack, session, hv, specs, "bench-scale",
                                            vcpus=VCPUS, current_vcpus=VCPUS)
        guest = ScaledGuest(server.id, domain, agent)
        assert guest.online() == "0-2"

        down, up = through_proxy(stack, guest, args.rounds)
        votes, prepares = phase_times(stack, guest.id, args.rounds)
        base_down, base_up = directly(Vcpus(agent), args.rounds)
        assert guest.online() == "0-2"

        print(f"\n[vCPU scaling, a 3-vCPU TCG guest, {args.rounds} of each, alternating]")
        print(f"  scale-down 3 → 2 at the client (novaclient): {ms(down)}")
        print(f"    of which the vote {ms(votes)}, the prepare {ms(prepares)}")
        print(f"  scale-up 2 → 3 at the client (novaclient):   {ms(up)}")
        print(f"  baseline Vcpus.apply offline: {ms(base_down)}")
        print(f"  baseline Vcpus.apply online:  {ms(base_up)}")
        for what, total, base in (("scale-down", down, base_down), ("scale-up", up, base_up)):
            p50, b50 = percentile(total, 50), percentile(base, 50)
            print(f"  {what}: p50 {p50 / b50:.1f}× the apply alone "
                  f"(+{(p50 - b50) * 1000:.0f} ms through the proxy)")
        print(f"end {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {load()}")
    finally:
        if hv is not None:
            hv.conn.close()
        if stack is not None:
            stack.stop()
        session.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
