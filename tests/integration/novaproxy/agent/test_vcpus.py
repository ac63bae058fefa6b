"""A host-process qemu-ga (root on the test machine) reports the vCPUs it sees, and
refuses to change them: the harness blocks guest-set-vcpus there, so vCPU scaling is
tried in the vm tier only, on a real guest."""


import pytest

from novaproxy.agent.qga_socket import SocketGuestAgent
from novaproxy.agent.vcpus import Vcpus
from novaproxy.scaling import ScaleError


def test_a_host_qemu_ga_reads_the_vcpus_and_never_sets_them(make_guest):
    vcpus = Vcpus(SocketGuestAgent(make_guest().qga_socket))
    view = vcpus.view(5)
    assert 0 in view.online and view.online <= view.plugged
    assert view.plugged  # the machine's CPUs, as qemu-ga reads them from /sys
    with pytest.raises(ScaleError, match="did not set vCPUs 1 offline"):
        vcpus.apply(frozenset({1}), False, 5)
    assert vcpus.view(5).online == view.online  # the test machine's CPUs untouched
