"""A real guest: boot under libvirt, then every host → guest path the agent uses.

guest-ping, a vote with no application registered (through guestd's spool, and
through guest-exec of guestd-ctl), guestd's status file through guest-file-*, the
guest agent's vCPU calls, and a clean ACPI power-off — all through libvirt and the
virtio-serial channel, with the project's own clients. Timings are reported on the
terminal.
"""

from __future__ import annotations

import base64
import statistics
import time
import uuid

import libvirt

from guestd import protocol
from harness.processes import wait_for
from novaproxy.agent import deliver, hypervisor, probe

GUESTD_CTL = ("/usr/bin/guestd-ctl",)
STATUS_FILE = "/run/guestd/status.json"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _read_status(agent) -> dict:
    """guest-file-open/read/close of guestd's status file, parsed as the host does."""
    handle = agent.execute("guest-file-open", {"path": STATUS_FILE, "mode": "r"}, timeout=5)
    try:
        result = agent.execute("guest-file-read",
                               {"handle": handle, "count": protocol.MAX_FRAME + 1}, timeout=5)
    finally:
        agent.execute("guest-file-close", {"handle": handle}, timeout=5)
    return protocol.parse_status(base64.b64decode(result["buf-b64"]))


def test_guest_boots_and_answers_through_libvirt(libvirt_vm, boot_guest, vm_report):
    instance = str(uuid.uuid4())
    guest = boot_guest(instance)
    vm_report(f"create → agent channel connected: {guest.connected:.1f}s")

    hv = hypervisor.Libvirt(libvirt_vm.uri)
    try:
        _answers(hv, guest, vm_report)
    finally:
        hv.conn.close()


def _answers(hv, guest, vm_report) -> None:
    """Every host → guest path, through ``hv`` (the agent's libvirt mode)."""
    instance = guest.instance
    assert instance in hv.instances()  # found by its agent channel, named by its UUID
    agent = hv.agent(instance)
    wait_for(lambda: probe.ping(agent, 2.0) is None, 30, "guest-ping", interval=0.1)
    first_answer = time.monotonic() - guest.created
    vm_report(f"create → first guest-ping answer: {first_answer:.1f}s")

    pings = []
    for _ in range(20):
        started = time.monotonic()
        assert agent.execute("guest-ping", timeout=5) == {}
        pings.append(time.monotonic() - started)
    vm_report(f"guest-ping through libvirt: p50 {_ms(statistics.median(pings))}, "
              f"max {_ms(max(pings))} (20 calls)")

    # A vote with no application registered: guestd answers accept, no voters.
    for spool_dir, path in ((deliver.DEFAULT_SPOOL_DIR, "guestd's spool (guest-file-*)"),
                            ("", "guest-exec guestd-ctl")):
        votes = []
        for n in range(10):
            req = protocol.request(f"vm-{n}-{uuid.uuid4().hex[:8]}", instance, "reboot",
                                   protocol.VOTE, timeout=10.0)
            started = time.monotonic()
            reply = deliver.deliver(hv, GUESTD_CTL, req, 10.0, "vm-host", spool_dir)
            votes.append(time.monotonic() - started)
            assert (reply.outcome, reply.voters, reply.id) == (protocol.ACCEPT, [],
                                                               req["id"]), reply
        vm_report(f"vote round trip ({path} → guestd → answer): "
                  f"p50 {_ms(statistics.median(votes))}, first {_ms(votes[0])}, "
                  f"max {_ms(max(votes))} (10 calls)")

    status = _read_status(agent)
    assert status["type"] == protocol.STATUS and status["apps"] == []
    started = time.monotonic()
    later = probe.read_status(agent, STATUS_FILE, timeout=5)
    vm_report(f"status file read (open/read/close): {_ms(time.monotonic() - started)}")
    wait_for(lambda: probe.read_status(agent, STATUS_FILE, 5)["seq"] > status["seq"], 10,
             "guestd's status seq to advance")
    assert later["seq"] >= status["seq"]

    # vCPUs: one plugged at boot (of two); hot-plug the second, then the guest agent
    # brings it online and offline (no udev in the guest to online it), through the
    # agent's client, which gives these slow calls room beyond its 1 s response timeout.
    domain = guest.domain
    assert agent.vcpus()["online"] == "0"
    started = time.monotonic()
    domain.setVcpusFlags(2, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    wait_for(lambda: agent.vcpus()["vcpus"] == "0-1", 30, "the hot-plugged vCPU")
    vm_report(f"vCPU hot-plug seen by the guest agent: {time.monotonic() - started:.1f}s")
    for state, online in ((True, "0-1"), (False, "0"), (True, "0-1")):
        started = time.monotonic()
        agent.set_vcpus("1", state)
        took = time.monotonic() - started
        assert agent.vcpus()["online"] == online
        vm_report(f"set_vcpus('1', online={state}): {_ms(took)}")

    # A clean power-off through the ACPI power button (libvirt shutdown).
    started = time.monotonic()
    domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    wait_for(lambda: not domain.isActive(), 30, "ACPI power-off")
    vm_report(f"ACPI power button → domain off: {time.monotonic() - started:.1f}s")
    assert "power button" in guest.console()
