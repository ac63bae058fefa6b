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
import pytest

from guestd import protocol
from harness.processes import wait_for
from novaproxy.agent import deliver, guest_agent, hypervisor, probe

GUESTD_CTL = ("/usr/bin/guestd-ctl",)
STATUS_FILE = protocol.DEFAULT_STATUS_FILE  # where the image's guestd writes it


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
    for spool_dir, path in ((protocol.DEFAULT_SPOOL_DIR, "guestd's spool (guest-file-*)"),
                            ("", "guest-exec guestd-ctl")):
        deliverer = deliver.Deliverer(hv, guestd_ctl=GUESTD_CTL, host="vm-host",
                                      spool_dir=spool_dir)
        votes = []
        for n in range(10):
            req = protocol.request(f"vm-{n}-{uuid.uuid4().hex[:8]}", instance, "reboot",
                                   protocol.VOTE, timeout=10.0)
            started = time.monotonic()
            reply = deliverer.deliver(req, 10.0)
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


def _freeze_qemu_ga(agent, seconds: float) -> None:
    """SIGSTOP the guest's qemu-ga 0.3 s from now (guest-exec must answer first: the
    child outlives it) for ``seconds``; return once it surely is frozen, 1.5 s from now
    (a loaded TCG guest may start the child late)."""
    guest_agent.guest_exec(agent, ["/bin/sh", "-c",
                                   f"(sleep 0.3; kill -STOP $(pidof qemu-ga); sleep {seconds}; "
                                   "kill -CONT $(pidof qemu-ga)) </dev/null >/dev/null 2>&1 &"],
                           b"", 5)
    time.sleep(1.5)


def test_a_healthy_guest_keeps_libvirts_agent_timeout_for_other_clients(
        libvirt_vm, boot_guest, vm_report):
    """While the guest agent answers, nova-compute's own agent calls (quiesce, set-password)
    wait as long as libvirt lets them; only after a timeout of ours, until the next answer,
    is the domain's response timeout lowered, so that a hung agent costs 1 s a ping."""
    guest = boot_guest(str(uuid.uuid4()))
    hv = hypervisor.Libvirt(libvirt_vm.uri)
    nova = libvirt.open(libvirt_vm.uri)  # another client on the same domain, as nova-compute
    try:
        agent = hv.agent(guest.instance)
        wait_for(lambda: probe.ping(agent, 2.0) is None, 30, "guest-ping", interval=0.1)

        def slow_call_of_another_client() -> float:
            _freeze_qemu_ga(agent, 3.0)
            started = time.monotonic()
            # It waits for the thaw; libvirt-python returns None when it gives up instead.
            info = nova.lookupByUUIDString(guest.instance).guestVcpus()
            assert info is not None and info["online"] == "0", info
            return time.monotonic() - started

        assert slow_call_of_another_client() > 1.0

        _freeze_qemu_ga(agent, 6.0)
        missed = []
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(guest_agent.GuestAgentTimeout):
                agent.execute("guest-ping", timeout=1.0)
            missed.append(time.monotonic() - started)
        # The second goes through libvirt's resync: 1 s, where the default would be 5 s.
        assert max(missed) < 2.5, missed
        vm_report(f"hung guest agent, two pings through libvirt: "
                  f"{', '.join(f'{m:.1f}s' for m in missed)}")
        wait_for(lambda: probe.ping(agent, 1.0) is None, 15, "the thawed agent")
        assert slow_call_of_another_client() > 1.0  # the default is back
    finally:
        nova.close()
        hv.conn.close()
