"""vCPUs taken offline and brought back inside a real guest, through the agent's own
guest agent client: a domain shaped as Nova shapes it (every vCPU plugged at boot, no
hot-plug headroom), its vCPUs changed with guest-set-vcpus and read back with the
guest's own view (guest-get-vcpus)."""

from __future__ import annotations

import uuid

from harness.processes import wait_for
from novaproxy.agent import hypervisor, probe
from novaproxy.agent.vcpus import Vcpus


def test_a_vcpu_goes_offline_and_comes_back_in_a_nova_shaped_guest(libvirt_vm, boot_guest,
                                                                    vm_report):
    guest = boot_guest(str(uuid.uuid4()), vcpus=3, current_vcpus=3)
    hv = hypervisor.Libvirt(libvirt_vm.uri)
    try:
        qga = hv.agent(guest.instance)
        wait_for(lambda: probe.ping(qga, 2.0) is None, 30, "guest-ping", interval=0.1)
        vcpus = Vcpus(qga)
        view = vcpus.view(10)
        assert view.plugged == view.online == {0, 1, 2}
        assert 0 not in view.offlinable  # Linux cannot take CPU 0 offline
        after = vcpus.apply(frozenset({2, 1}), False, 30)
        assert after.online == {0} and after.plugged == {0, 1, 2}
        after = vcpus.apply(frozenset({1}), True, 30)
        assert after.online == {0, 1}
        vm_report(f"vCPUs through guest-set-vcpus: offline {{1,2}}, then {{1}} online: "
                  f"online now {sorted(after.online)}")
    finally:
        hv.conn.close()
