"""vCPU scaling of a real guest through the proxy, with real novaclient: Nova, the proxy,
Redis, the agent in libvirt mode, qemu-ga's guest-set-vcpus in a TCG guest.

One guest, shared by the tests in file order: a server of a 3-vCPU flavor (scaling,
negotiation and monitoring on) created in the Nova fixture on ``vmhost``, and a libvirt
domain with its UUID shaped as Nova shapes it: every vCPU plugged at boot, no hot-plug
headroom. Its application is a vote hook in the initramfs (:mod:`harness.vm_scaling`)
that logs every notice with its details, vetoes on demand and, on demand, names the
vCPU to give up. Each test starts from all three vCPUs online, put back through the
proxy (:func:`vm`). A second guest (:func:`floor`) has a flavor with
``guest:min_vcpus=2`` and no monitoring. The guests' own word is read through qemu-ga:
``/sys/devices/system/cpu/online``.
"""

from __future__ import annotations

import time
import uuid

import pytest
from novaclient import exceptions

from harness import libvirt_session
from harness.audit import audits, wait_audits, wait_state
from harness.processes import wait_for
from harness.vm_guest import BOOT_TIMEOUT, boot_server
from harness.vm_scaling import FILES, HOOK, ScaledGuest, phases, scale, wait_given_back
from novaproxy import audit, flavor, redis_schema
from novaproxy.agent import hypervisor
from novaproxy.agent import scale as agent_scale

VCPUS = 3
ALL = "0-2"  # /sys/devices/system/cpu/online with every vCPU online
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SPECS = {"guest:negotiation": "true", flavor.VCPU_SCALING: "true",
         "guest:monitoring": "true"}  # the monitor's first answer after a boot re-applies


@pytest.fixture(scope="module")
def scale_initrd(guest_image) -> str:
    return libvirt_session.build_initrd(FILES)


@pytest.fixture(scope="module")
def hv(libvirt_vm):
    """The agent's own libvirt client, for the tests' qemu-ga calls."""
    hv = hypervisor.Libvirt(libvirt_vm.uri)
    yield hv
    hv.conn.close()


@pytest.fixture(scope="module")
def guest(vm_stack, libvirt_vm, hv, scale_initrd, vm_report):
    """The shared guest: 3 vCPUs plugged and online, healthy to the monitor."""
    specs = vm_stack.flavor(f"vm-scale-{uuid.uuid4().hex[:6]}", SPECS, vcpus=VCPUS)
    domain = None
    try:
        started = time.monotonic()
        server, domain, agent = boot_server(vm_stack, libvirt_vm, hv, specs, "scaled",
                                            initrd=scale_initrd, vcpus=VCPUS,
                                            current_vcpus=VCPUS)
        wait_state(vm_stack, server.id, "healthy", 30)
        vm_report(f"3-vCPU guest: create → monitor healthy {time.monotonic() - started:.1f}s")
        yield ScaledGuest(server.id, domain, agent)
    finally:
        vm_stack.cleanup()
        if domain is not None:
            libvirt_vm.destroy(domain)


@pytest.fixture
def vm(vm_stack, guest):
    """The shared guest with every vCPU online, nothing vetoed or picked, and its server
    given back by the proxy (the previous scale's end notice delivered)."""
    wait_state(vm_stack, guest.id, "healthy", BOOT_TIMEOUT)
    guest.veto(None)
    guest.pick(None)
    wait_given_back(vm_stack.redis.url, guest.id)
    if guest.online() != ALL:
        scale(vm_stack.nova(), guest.id, online=VCPUS)
        wait_given_back(vm_stack.redis.url, guest.id)
    assert guest.online() == ALL
    return guest


def _recorded(stack, instance: str) -> dict | None:
    client = redis_schema.connect(stack.redis.url)
    try:
        return redis_schema.vcpus_of(client, instance)
    finally:
        client.close()


def test_scale_down_to_one_leaves_only_cpu0_and_the_hook_sees_every_phase(vm_stack, vm,
                                                                         vm_report):
    seen = len(vm.notices())
    started = time.monotonic()
    body = scale(vm_stack.nova(), vm.id, online=1)
    vm_report(f"scale-down 3 → 1 at the client: {(time.monotonic() - started) * 1000:.0f} ms")
    assert (body["online"], body["offline"], body["plugged"]) == ([0], [1, 2], VCPUS)
    assert vm.online() == "0"  # the guest kernel's own word

    notices = vm.wait_notices(seen + 3)[seen:]
    assert phases(notices) == [("scale-down", "vote"), ("scale-down", "prepare"),
                               ("scale-down", "end")]
    vote, prepare, end = (n["details"] for n in notices)
    for asked in (vote, prepare):  # the set now, the count wanted, the default pick
        assert (asked["online"], asked["target"], asked["offline"]) == ([0, 1, 2], 1, [1, 2])
    assert (end["online"], end["offline"]) == ([0], [1, 2])

    recorded = _recorded(vm_stack, vm.id)
    assert recorded is not None
    assert (recorded["online"], recorded["plugged"]) == (1, VCPUS)
    assert recorded["operation"] == body["operation"]
    ended = wait_audits(vm_stack, vm.id, audit.OPERATION, "scale-down")
    assert ended[-1]["outcome"] == "end-delivered"


def test_a_hook_nack_is_a_409_with_its_reason_and_nothing_changes(vm_stack, vm):
    seen = len(vm.notices())
    recorded = _recorded(vm_stack, vm.id)
    vm.veto("rebalancing shards")
    with pytest.raises(exceptions.Conflict) as raised:
        scale(vm_stack.nova(), vm.id, step="down")
    assert "action-rejected" in str(raised.value)
    assert f"{HOOK}: rebalancing shards" in str(raised.value)
    assert vm.online() == ALL
    assert phases(vm.notices()[seen:]) == [("scale-down", "vote")]
    assert _recorded(vm_stack, vm.id) == recorded


@pytest.fixture(scope="module")
def floor(vm_stack, libvirt_vm, hv, guest, scale_initrd):
    """A second guest whose flavor keeps at least 2 vCPUs online (a server's flavor is
    fixed when it is created) and turns monitoring off. Booted after the shared one
    (``guest``), so that its cleanup deletes its own server only."""
    specs = vm_stack.flavor(f"vm-min-{uuid.uuid4().hex[:6]}",
                            {"guest:negotiation": "true", flavor.VCPU_SCALING: "true",
                             flavor.MIN_VCPUS: "2"}, vcpus=VCPUS)
    keep = len(vm_stack.booted)
    domain = None
    try:
        server, domain, agent = boot_server(vm_stack, libvirt_vm, hv, specs, "scaled-min",
                                            initrd=scale_initrd, vcpus=VCPUS,
                                            current_vcpus=VCPUS)
        yield ScaledGuest(server.id, domain, agent)
    finally:
        vm_stack.cleanup(keep=keep)
        if domain is not None:
            libvirt_vm.destroy(domain)


def test_min_vcpus_is_enforced_with_a_400_that_names_it(vm_stack, floor):
    with pytest.raises(exceptions.BadRequest) as raised:
        scale(vm_stack.nova(), floor.id, online=1)
    assert "1 vCPU(s) online is out of range: this flavor allows 2 (guest:min_vcpus)" in \
        str(raised.value)
    assert floor.online() == ALL and floor.notices() == []  # nothing was put to it
    # The minimum itself is allowed.
    assert scale(vm_stack.nova(), floor.id, online=2)["online"] == [0, 1]
    assert floor.online() == "0-1"
    wait_given_back(vm_stack.redis.url, floor.id)


def test_an_unmonitored_guest_rebooting_itself_gets_its_count_back(vm_stack, floor):
    """No monitor, so no first answer: the agent takes the count back when libvirt says
    the guest agent's channel opened."""
    if floor.online() != "0-1":
        scale(vm_stack.nova(), floor.id, online=2)
        wait_given_back(vm_stack.redis.url, floor.id)
    boot_id = floor.read(BOOT_ID)
    reapplied = len(audits(vm_stack, floor.id, audit.SCALE, agent_scale.REAPPLY))
    floor.run("(sleep 0.2; reboot -f) </dev/null >/dev/null 2>&1 &")
    event = wait_audits(vm_stack, floor.id, audit.SCALE, agent_scale.REAPPLY,
                        count=reapplied + 1, timeout=BOOT_TIMEOUT)[-1]
    assert wait_for(lambda: floor.read(BOOT_ID) != boot_id, 10, "the guest's new boot")
    assert event["outcome"] == "0-1"
    assert floor.online() == "0-1"


def test_a_hook_names_the_vcpu_to_give_up(vm_stack, vm):
    seen = len(vm.notices())
    vm.pick([1])
    body = scale(vm_stack.nova(), vm.id, step="down")
    assert (body["online"], body["offline"]) == ([0, 2], [1])  # not the highest, 2
    assert vm.online() == "0,2"
    notices = vm.wait_notices(seen + 3)[seen:]
    assert phases(notices) == [("scale-down", "vote"), ("scale-down", "prepare"),
                               ("scale-down", "end")]
    assert notices[1]["details"]["offline"] == [2]  # the host's default, before the pick
    assert (notices[2]["details"]["online"], notices[2]["details"]["offline"]) == ([0, 2], [1])


def test_scale_up_brings_the_vcpu_back_and_the_end_notice_carries_the_new_set(vm_stack, vm,
                                                                              vm_report):
    nova = vm_stack.nova()
    assert scale(nova, vm.id, step="down")["online"] == [0, 1]
    wait_given_back(vm_stack.redis.url, vm.id)
    assert vm.online() == "0-1"
    seen = len(vm.notices())
    started = time.monotonic()
    body = scale(nova, vm.id, step="up")
    vm_report(f"scale-up 2 → 3 at the client: {(time.monotonic() - started) * 1000:.0f} ms")
    assert (body["online"], body["offline"]) == ([0, 1, 2], [])
    assert vm.online() == ALL
    notices = vm.wait_notices(seen + 2)[seen:]
    # No vote: nothing is taken from the applications (a prepare notice, then the end).
    assert phases(notices) == [("scale-up", "prepare"), ("scale-up", "end")]
    assert (notices[0]["details"]["online"], notices[0]["details"]["added"]) == ([0, 1], [2])
    assert (notices[1]["details"]["online"], notices[1]["details"]["added"]) == ([0, 1, 2],
                                                                                 [2])
    assert _recorded(vm_stack, vm.id)["online"] == VCPUS


def test_a_guest_rebooting_itself_comes_back_with_its_scaled_down_count(vm_stack, vm,
                                                                        vm_report):
    scale(vm_stack.nova(), vm.id, online=1)
    wait_given_back(vm_stack.redis.url, vm.id)
    assert vm.online() == "0"
    boot_id = vm.read(BOOT_ID)
    reapplied = len(audits(vm_stack, vm.id, audit.SCALE, agent_scale.REAPPLY))
    started = time.monotonic()
    vm.run("(sleep 0.2; reboot -f) </dev/null >/dev/null 2>&1 &")

    event = wait_audits(vm_stack, vm.id, audit.SCALE, agent_scale.REAPPLY,
                        count=reapplied + 1, timeout=BOOT_TIMEOUT)[-1]
    vm_report(f"guest rebooting itself → the recorded 1 vCPU re-applied: "
              f"{time.monotonic() - started:.1f}s")
    assert wait_for(lambda: vm.read(BOOT_ID) != boot_id, 10,
                    "the guest's new boot")
    assert (event["outcome"], event["host"]) == ("0", "vmhost")
    assert vm.online() == "0"
    assert _recorded(vm_stack, vm.id)["online"] == 1
