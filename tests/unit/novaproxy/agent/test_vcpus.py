"""The guest's vCPU list, as its agent answers ``guest-get-vcpus`` (untrusted)."""

import pytest

from novaproxy.agent.vcpus import View, parse_view
from novaproxy.scaling import ScaleError


def entry(cpu, online=True, can_offline=True):
    return {"logical-id": cpu, "online": online, "can-offline": can_offline}


def test_the_guest_s_view_of_its_vcpus():
    answer = [entry(0, can_offline=False), entry(1), entry(2, online=False), entry(3)]
    assert parse_view(answer) == View(frozenset({0, 1, 2, 3}), frozenset({0, 1, 3}),
                                      frozenset({1, 2, 3}))


@pytest.mark.parametrize("answer", [
    [], {"0": True}, "0-3", [entry(0), entry(0)], [{"logical-id": True, "online": True}],
    [{"logical-id": 0, "online": "yes"}], [entry(-1)], [entry(5000)], [entry(0)] * 5000,
])
def test_a_list_that_is_not_one_is_refused(answer):
    with pytest.raises(ScaleError, match="not one"):
        parse_view(answer)
