"""Server-group messaging between two real VMs that have no network device at all.

Two servers of one Nova server group (flavor ``guest:group_messaging=true``, no
monitoring) are created in the Nova fixture on the vm tier's one compute; two
libvirt domains with their UUIDs boot from an initramfs carrying a group hook
(``/etc/guestd/group.d/50-log``: each message it gets, one JSON line in
``/run/group.log``) and ``/usr/bin/group-app`` (tests/vm/group_app.py: the guestd
client API's ``broadcast``/``send``, run in the guest with ``guest-exec``). The only
way between the guests is the host's: guestd's outbox read by the agent through
qemu-ga, Redis, and guestd's spool written through qemu-ga: the pre-network claim,
shown on guests the test proves have no network interface but ``lo``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from xml.etree import ElementTree

import pytest

from guestd import group_protocol as gp
from harness import libvirt_session
from harness.groups import delete_group, server_group
from harness.processes import wait_for
from harness.vm_guest import BOOT_TIMEOUT, VM_HOST, VMGuest, answering
from novaproxy import flavor, redis_schema
from novaproxy.agent import hypervisor

HERE = os.path.dirname(os.path.abspath(__file__))
GROUP_LOG = "/run/group.log"
# The recipient's application: every group message, as guestd hands it over, one line.
LOG_HOOK = f"""#!/bin/sh
# The vm tier's group hook, run by guestd as `50-log group message`, the message on stdin.
line=$(cat)
printf '%s\\n' "$line" >> {GROUP_LOG}
"""
GROUP_APP = "/usr/bin/group-app"
PINGS = 100  # round trips timed: ~1 s each (two 0.5 s outbox polls)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class Member(VMGuest):
    """One member's guest: what its group hook logged, and group-app runs."""

    def logged(self) -> list:
        """The group messages the hook got, in order (it gets the peer notices too: the
        other member's libvirt events, such as its start, are told as they happen)."""
        lines = [json.loads(line) for line in self.read(GROUP_LOG).splitlines() if line]
        return [m for m in lines if m.get("type") == gp.GROUP_MESSAGE]

    def group_app(self, command: str, target: str, arg: str, out: str) -> None:
        """Start ``group-app COMMAND TARGET ARG OUT`` in the background."""
        self.spawn(GROUP_APP, command, target, arg, out, log=out + ".log")

    def send(self, to: str, body: object) -> dict:
        """``group-app send``: the host's result, as the application was told it."""
        out = f"/run/send-{uuid.uuid4().hex[:8]}.json"
        self.group_app("send", to, json.dumps(body), out)
        return self.read_json(out, 60, f"the result of {self.id}'s message to {to}")


@pytest.fixture(scope="module")
def group_initrd(guest_image) -> str:
    """The guest image's initrd with the group hook and group-app added (cached)."""
    with open(os.path.join(HERE, "group_app.py")) as f:
        app = f.read()
    return libvirt_session.build_initrd({"/etc/guestd/group.d/50-log": LOG_HOOK,
                                         GROUP_APP: app})


@pytest.fixture(scope="module")
def pair(vm_stack, libvirt_vm, group_initrd, vm_report):
    """Two members of one server group, each a real guest with no network device."""
    messaging = vm_stack.flavor(f"vm-group-{uuid.uuid4().hex[:6]}",
                                {flavor.GROUP_MESSAGING: "true"})
    gid = server_group(vm_stack)
    hv = hypervisor.Libvirt(libvirt_vm.uri)
    domains = []
    try:
        servers = []
        for name in ("a", "b"):
            server, host = vm_stack.boot(f"vm-{name}", messaging, with_guest=False, group=gid)
            assert host == VM_HOST
            servers.append(server)
        created = time.monotonic()
        # Both boot at once: two TCG guests on two cores.
        domains = [libvirt_vm.boot(s.id, initrd=group_initrd) for s in servers]
        members = [Member(s.id, d, answering(libvirt_vm, hv, s.id, d, BOOT_TIMEOUT))
                   for s, d in zip(servers, domains)]
        client = redis_schema.connect(vm_stack.redis.url)
        try:
            wait_for(lambda: all(redis_schema.route_of(client, m.id) == VM_HOST
                                 for m in members), 10, "the agent's routes to both VMs")
        finally:
            client.close()
        vm_report(f"two guests created → both answering, both routed: "
                  f"{time.monotonic() - created:.1f}s")
        yield members
    finally:
        vm_stack.cleanup()
        for domain in domains:
            libvirt_vm.destroy(domain)
        delete_group(vm_stack, gid)
        hv.conn.close()


def test_the_guests_have_no_network_device(pair):
    for member in pair:
        devices = ElementTree.fromstring(member.domain.XMLDesc(0)).find("devices")
        assert devices.findall("interface") == [], "the domain has a network interface"
        assert devices.findall("channel/target[@name='org.qemu.guest_agent.0']"), \
            "the domain has no guest agent channel"
        assert member.run("ls /sys/class/net").split() == ["lo"]


def test_a_broadcast_and_a_unicast_cross_between_the_guests(pair):
    a, b = pair
    body = {"role": "active", "from": "a body's own word", "n": [1, 2]}
    result = a.send("*", body)
    assert (result.get("status"), list(result.get("members", ()))) == (gp.ACCEPTED, [b.id]), \
        result
    got = wait_for(lambda: [m for m in b.logged() if m["id"] == result["message"]], 60,
                   "the broadcast in B's hook log")
    assert len(got) == 1
    assert (got[0]["from"], got[0]["to"], got[0]["body"]) == (a.id, gp.BROADCAST, body)
    assert [m for m in a.logged() if m["id"] == result["message"]] == []  # not to itself

    result = b.send(a.id, "standby, ack")
    assert (result.get("status"), list(result.get("members", ()))) == (gp.ACCEPTED, [a.id]), \
        result
    got = wait_for(lambda: [m for m in a.logged() if m["id"] == result["message"]], 60,
                   "the unicast in A's hook log")
    assert [(m["from"], m["to"], m["body"]) for m in got] == [(b.id, a.id, "standby, ack")]


def test_ping_pong_round_trip_through_the_host(pair, vm_report):
    """A's application sends B a unicast and waits for B's application to send it
    back, PINGS times, timed in A's clock: guest → qemu-ga → agent → Redis → agent →
    qemu-ga → guest, twice."""
    a, b = pair
    b.group_app("echo", a.id, str(PINGS), "/run/echo.json")
    b.read_json("/run/echo.json.ready", 60, "B's echo application registered")
    load = os.getloadavg()[0]
    a.group_app("ping", b.id, str(PINGS), "/run/ping.json")
    pinged = a.read_json("/run/ping.json", PINGS * 10, "A's ping-pong")
    assert "error" not in pinged, pinged
    trips = sorted(pinged["round_trips"])
    assert len(trips) == PINGS
    assert b.read_json("/run/echo.json", 10, "B's echo") == {"echoed": PINGS}
    p99 = trips[min(len(trips) - 1, round(0.99 * (len(trips) - 1)))]
    vm_report(f"group message round trip between two VMs (A → host → B's echo → host → A, "
              f"in A's clock, {PINGS} pings): p50 {_ms(statistics.median(trips))}, p99 "
              f"{_ms(p99)}, min {_ms(trips[0])}, max {_ms(trips[-1])}; load "
              f"{load:.2f} → {os.getloadavg()[0]:.2f}")
