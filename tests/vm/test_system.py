"""The whole system through a real VM: Nova, the proxy, Redis, the agent in libvirt mode.

One guest, shared by the tests in file order: a server is created in the Nova
fixture (fake virt driver) on the host ``vmhost``, then a libvirt domain with
that server's UUID is defined and started on the session libvirtd, so the
proxy, the agent (``hypervisor = libvirt``) and its monitor act on it exactly as
in production. The guest's application is a vote hook baked into the initramfs
(``build.sh --extra``): it logs every phase it sees and rejects votes while
``/run/veto`` exists; the tests switch the veto and read the log through qemu-ga.
The hung guest is its QEMU process SIGSTOPped from the host: libvirt still
reports it running, so only the white-box pings can tell.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
import uuid

import libvirt
import pytest
from novaclient import exceptions

from guestd import protocol
from harness import libvirt_session
from harness.audit import audits, wait_audits, wait_state
from harness.processes import wait_for
from harness.vm_guest import BOOT_TIMEOUT, VM_HOST, VMGuest, answering
from novaproxy import audit, redis_schema
from novaproxy.agent import deliver, guest_agent, hypervisor, probe

HOST = VM_HOST
HOOK = "50-vm-app"
HOOK_LOG = "/run/vm-app.log"
VETO = "/run/veto"
# The guest's application: every phase to its log; a vote rejected while the veto exists.
HOOK_SCRIPT = f"""#!/bin/sh
# The vm tier's guest application, run by guestd as `{HOOK} EVENT PHASE`.
cat > /dev/null
echo "$1 $2" >> {HOOK_LOG}
if [ "$2" = vote ] && [ -e {VETO} ]; then
    head -n 1 {VETO}
    exit 1
fi
exit 0
"""
VOTES = 20  # negotiation round trips timed


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class VM(VMGuest):
    """The booted guest, its server in Nova, and a guest agent client of our own."""

    def __init__(self, server, domain, agent, created: float) -> None:
        super().__init__(server.id, domain, agent)
        self.server = server
        self.created = created

    def phases(self) -> list:
        """What the guest's application has seen, in order: (event, phase)."""
        return [tuple(line.split()) for line in self.read(HOOK_LOG).splitlines() if line]

    def veto(self, reason: str | None) -> None:
        if reason is None:
            self.run(f"rm -f {VETO}")
        else:
            self.run(f'printf "%s\\n" "$1" > {VETO}', reason)


@pytest.fixture(scope="module")
def app_initrd(guest_image) -> str:
    """The guest image's initrd with the application hook added (built once, cached)."""
    return libvirt_session.build_initrd({f"/etc/guestd/hooks.d/{HOOK}": HOOK_SCRIPT})


@pytest.fixture(scope="module")
def vm(vm_stack, libvirt_vm, app_initrd, vm_report):
    """A negotiated, monitored server whose VM is a real guest, healthy to the monitor."""
    flavor = vm_stack.flavor(f"vm-{uuid.uuid4().hex[:6]}",
                             {"guest:negotiation": "true", "guest:monitoring": "true"})
    server, host = vm_stack.boot("vm", flavor, with_guest=False)
    assert host == HOST
    hv = hypervisor.Libvirt(libvirt_vm.uri)
    domain = None
    try:
        created = time.monotonic()
        domain = libvirt_vm.boot(server.id, initrd=app_initrd)
        guest = VM(server, domain, answering(libvirt_vm, hv, server.id, domain, BOOT_TIMEOUT),
                   created)
        answered = time.monotonic() - created
        client = redis_schema.connect(vm_stack.redis.url)
        wait_for(lambda: redis_schema.route_of(client, server.id) == HOST, 10,
                 "the agent's route to the VM")
        wait_state(vm_stack, server.id, "healthy", 30)
        vm_report(f"create → first guest-ping answer: {answered:.1f}s; → monitor healthy: "
                  f"{time.monotonic() - created:.1f}s")
        yield guest
    finally:
        vm_stack.cleanup()
        if domain is not None:
            libvirt_vm.destroy(domain)
        hv.conn.close()


def _reboots(stack, instance: str) -> int:
    return stack.instance_actions(instance).count("reboot")


def test_negotiated_reboot_nacked_then_acked_with_its_end_notice(vm_stack, vm):
    seen = len(vm.phases())
    reboots = _reboots(vm_stack, vm.id)
    vm.veto("replication in progress")
    with pytest.raises(exceptions.Conflict) as raised:
        vm_stack.nova().servers.reboot(vm.id)
    assert f"{HOOK}: replication in progress" in str(raised.value)
    assert "action-rejected" in str(raised.value)
    assert _reboots(vm_stack, vm.id) == reboots  # Nova never saw it
    assert vm.phases()[seen:] == [("reboot", "vote")]

    vm.veto(None)
    vm_stack.nova().servers.reboot(vm.id)
    vm_stack.wait_for_server(vm.id, "ACTIVE")
    assert _reboots(vm_stack, vm.id) == reboots + 1
    # The end notice: once Nova has settled and the guest answers (the fake driver
    # leaves the domain running, so it answers throughout).
    wait_for(lambda: len(vm.phases()) >= seen + 4, 30, "the end notice in the guest")
    assert vm.phases()[seen:] == [("reboot", "vote"), ("reboot", "vote"),
                                  ("reboot", "prepare"), ("reboot", "end")]
    ended = wait_audits(vm_stack, vm.id, audit.OPERATION, "reboot", timeout=10)
    assert ended[-1]["outcome"] == "end-delivered" and ended[-1]["host"] == HOST
    assert audits(vm_stack, vm.id, audit.FAILURE) == []  # the reboot was an expected silence


def test_negotiation_round_trip_through_virtio_serial(vm_stack, vm, vm_report):
    """NACKed reboots: proxy → Redis → agent → libvirt → guestd's spool (guest-file-*)
    → guestd → hook, and back, timed where the proxy asks (as bench/negotiation.py
    times it on host processes); and the caller's whole view through novaproxy-api,
    which adds Nova's server look-up and the HTTP hops."""
    vm.veto("not now")
    nova = vm_stack.nova()
    took = []
    try:
        for _ in range(VOTES):
            started = time.monotonic()
            with pytest.raises(exceptions.Conflict, match=f"{HOOK}: not now"):
                nova.servers.reboot(vm.id)
            took.append(time.monotonic() - started)
    finally:
        vm.veto(None)
    asked = [e for e in audits(vm_stack, vm.id, audit.NEGOTIATION) if e["outcome"] == "reject"]
    answered = [e for e in audits(vm_stack, vm.id, audit.GUEST_ANSWER)
                if e["phase"] == "vote" and e["outcome"] == "reject"]
    assert len(asked) >= VOTES and len(answered) >= VOTES
    round_trips = [int(e["took_ms"]) / 1000 for e in asked[-VOTES:]]
    in_agent = [int(e["took_ms"]) / 1000 for e in answered[-VOTES:]]
    vm_report(f"negotiation round trip at the proxy (→ Redis → agent → virtio-serial → guestd "
              f"→ hook, NACK): p50 {_ms(statistics.median(round_trips))}, first "
              f"{_ms(round_trips[0])}, max {_ms(max(round_trips))} ({VOTES} votes); of which "
              f"the agent's delivery p50 {_ms(statistics.median(in_agent))}")
    vm_report(f"the caller's view (novaclient → novaproxy-api, Nova's server look-up, 409): "
              f"p50 {_ms(statistics.median(took))}, max {_ms(max(took))}")


def test_agent_error_replies_through_libvirt_are_answers(vm):
    """libvirt turns qemu-ga's error replies into internal errors: still answers."""
    with pytest.raises(guest_agent.CommandFailed) as raised:
        vm.agent.execute("guest-no-such-command", timeout=5)
    assert raised.value.error_class == "CommandNotFound"
    req = protocol.request(uuid.uuid4().hex, vm.id, "reboot", protocol.VOTE, timeout=5.0)
    deliverer = deliver.Deliverer(_Guests(vm.agent), guestd_ctl=("/usr/bin/no-guestd-ctl",),
                                  host=HOST, spool_dir="")
    reply = deliverer.deliver(req, 5.0)
    assert reply.outcome == protocol.NOT_NEGOTIATING, reply


class _Guests:
    """One guest's agent, where a Deliverer expects a hypervisor."""

    def __init__(self, agent) -> None:
        self._agent = agent

    def agent(self, _instance: str):
        return self._agent


def test_vcpus_through_the_agents_libvirt_client(vm, vm_report):
    """The typed agent calls get their own deadline, not the 1 s the pings need."""
    assert vm.agent.vcpus()["online"] == "0"
    vm.domain.setVcpusFlags(2, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # hot-plug the second
    wait_for(lambda: vm.agent.vcpus()["vcpus"] == "0-1", 30, "the hot-plugged vCPU")
    for online, expected in ((True, "0-1"), (False, "0"), (True, "0-1")):
        started = time.monotonic()
        vm.agent.set_vcpus("1", online)
        took = time.monotonic() - started
        assert vm.agent.vcpus()["online"] == expected
        vm_report(f"set_vcpus('1', online={online}) through LibvirtGuestAgent: {_ms(took)}")
    # The pings are cheap again: the next test's detection latency depends on it.
    assert probe.ping(vm.agent, 1.0) is None


def test_a_guest_rebooting_itself_is_waited_for_not_recovered(vm_stack, vm, vm_report):
    """A reboot from inside the guest: qemu-ga's channel closes, libvirt says so, and the
    monitor gives the guest its boot grace instead of counting missed pings (a hung
    guest cannot close the channel). Without that, 3 s of silence would be a failure."""
    reboots = _reboots(vm_stack, vm.id)
    seen = len(audits(vm_stack, vm.id, audit.MONITOR))
    started = time.monotonic()
    vm.run("(sleep 0.2; reboot -f) </dev/null >/dev/null 2>&1 &")

    restarted = ("booting", "the guest agent disconnected (the guest opened or closed the "
                             "channel)")

    def changes() -> list:
        return [(e["event"], e["why"]) for e in audits(vm_stack, vm.id, audit.MONITOR)[seen:]]

    def back() -> bool:  # booting on the channel's close, then healthy on the first answer
        seen_now = changes()
        return restarted in seen_now and ("healthy", "first answer") in seen_now[
            seen_now.index(restarted):]

    wait_for(back, BOOT_TIMEOUT, "the restart, then the answer")
    # A ping may miss in the instant before libvirt reports the channel closed: suspect
    # at most, never failed.
    assert {event for event, _ in changes()} <= {"suspect", "booting", "healthy"}, changes()
    vm_report(f"guest rebooting itself → monitor healthy again: "
              f"{time.monotonic() - started:.1f}s, no recovery")
    assert audits(vm_stack, vm.id, audit.FAILURE) == []
    assert _reboots(vm_stack, vm.id) == reboots
    wait_for(lambda: probe.ping(vm.agent, 2.0) is None, 10, "guest-ping after the reboot")


def test_hung_guest_is_detected_and_its_reboot_requested(vm_stack, vm, libvirt_vm, vm_report):
    # Settled after the earlier tests' reboot (quiet, booting, healthy again): a hang
    # while the monitor still waits for the rebooted guest's first answer is a boot.
    wait_state(vm_stack, vm.id, "healthy", 30, steady=3)
    reboots = _reboots(vm_stack, vm.id)
    failures = len(audits(vm_stack, vm.id, audit.FAILURE))
    pid = libvirt_vm.qemu_pid(vm.domain)
    stopped = time.time()
    os.kill(pid, signal.SIGSTOP)  # the whole guest frozen, behind libvirt's back
    try:
        failure = wait_audits(vm_stack, vm.id, audit.FAILURE, count=failures + 1,
                              timeout=30)[failures]
        detection = float(failure["time"]) - stopped
        assert vm.domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # libvirt saw nothing
        assert (failure["event"], failure["host"]) == ("hung", HOST)
        assert json.loads(failure["evidence"])["missed_pings"] == 3
        wait_for(lambda: _reboots(vm_stack, vm.id) == reboots + 1, 15,
                 "Nova's reboot action")
        recovery = audits(vm_stack, vm.id, audit.RECOVERY)[-1]
        assert (recovery["outcome"], recovery["why"]) == ("recovering",
                                                          "Nova hard reboot requested")
    finally:
        os.kill(pid, signal.SIGCONT)  # what the hard reboot would have done
    vm_report(f"hung guest (QEMU SIGSTOPped) → failure declared: {detection:.1f}s "
              "(interval 1 s × 3 misses + one interval)")
    # A ping waits one interval, never libvirt's 5 s: 3 misses take about 4 s, not 11.
    assert detection < 8, detection
    wait_state(vm_stack, vm.id, "healthy", 30)
    assert _reboots(vm_stack, vm.id) == reboots + 1
    assert len(audits(vm_stack, vm.id, audit.FAILURE)) == failures + 1
