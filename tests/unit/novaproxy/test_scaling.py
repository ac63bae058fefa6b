"""vCPU scaling's decisions: the action's body, the flavor's policy, the target count
and which vCPUs go offline or come back."""

import pytest

from novaproxy import flavor, scaling
from novaproxy.scaling import Policy, Request, ScaleError

ON = {flavor.VCPU_SCALING: "true"}


@pytest.mark.parametrize("body, request_", [
    ({"novaproxy-scale": {"online": 2}}, Request(online=2)),
    ({"novaproxy-scale": {"step": "down"}}, Request(step=-1)),
    ({"novaproxy-scale": {"step": "up"}}, Request(step=1)),
])
def test_the_action_asks_for_a_count_or_a_step(body, request_):
    assert scaling.parse_action(body) == request_


@pytest.mark.parametrize("body, says", [
    ({"novaproxy-scale": {"online": 0}}, "at least 1"),
    ({"novaproxy-scale": {"online": True}}, "whole number"),
    ({"novaproxy-scale": {"online": "2"}}, "whole number"),
    ({"novaproxy-scale": {"step": "sideways"}}, '"up" or "down"'),
    ({"novaproxy-scale": {"online": 2, "step": "up"}}, "exactly one"),
    ({"novaproxy-scale": {}}, "exactly one"),
    ({"novaproxy-scale": {"online": 1}, "reboot": {}}, "nothing else"),
    (["novaproxy-scale"], "nothing else"),
])
def test_a_malformed_action_says_what_to_fix(body, says):
    with pytest.raises(ScaleError, match=says):
        scaling.parse_action(body)


def test_the_flavor_sets_the_policy_and_a_bad_minimum_is_the_operator_s():
    assert scaling.policy(ON, 4) == Policy(True, 1, 4)
    assert scaling.policy({**ON, flavor.MIN_VCPUS: "2"}, 4) == Policy(True, 2, 4)
    assert scaling.policy({}, 4) == Policy(False, 1, 4)
    for bad in ("0", "5", "two", "-1", "1.5"):
        with pytest.raises(ScaleError, match="ask the operator"):
            scaling.policy({**ON, flavor.MIN_VCPUS: bad}, 4)


def test_the_target_is_in_range_and_changes_something():
    rules, online = Policy(True, 2, 4), frozenset({0, 1, 2})
    assert scaling.target(Request(online=2), online, rules) == 2
    assert scaling.target(Request(step=1), online, rules) == 4
    assert scaling.target(Request(step=-1), online, rules) == 2
    with pytest.raises(ScaleError, match=r"out of range: this flavor allows 2 .* to 4"):
        scaling.target(Request(online=1), online, rules)
    with pytest.raises(ScaleError, match="out of range"):
        scaling.target(Request(online=5), online, rules)
    with pytest.raises(ScaleError, match="online already"):
        scaling.target(Request(online=3), online, rules)
    with pytest.raises(ScaleError, match="not enabled"):
        scaling.target(Request(online=2), online, Policy(False, 1, 4))


def test_the_named_vcpus_go_offline_first_never_cpu_0_then_the_highest():
    online = frozenset({0, 1, 2, 3})
    assert scaling.to_offline(online, 1) == {3}
    assert scaling.to_offline(online, 2, named=(1,)) == {1, 3}
    assert scaling.to_offline(online, 1, named=(0, 7, 2)) == {2}  # 0 never, 7 not online
    assert scaling.to_offline(online, 3) == {1, 2, 3}
    with pytest.raises(ScaleError, match="besides CPU 0"):
        scaling.to_offline(online, 4)


def test_the_lowest_offline_vcpus_come_back():
    assert scaling.to_online(frozenset({0, 3}), frozenset(range(4)), 1) == {1}
    assert scaling.to_online(frozenset({0}), frozenset(range(4)), 3) == {1, 2, 3}
    with pytest.raises(ScaleError, match="only 0"):
        scaling.to_online(frozenset({0, 1}), frozenset({0, 1}), 1)


def test_a_cpu_list_in_ranges():
    assert scaling.cpu_list({0, 1, 3, 5, 6, 7}) == "0-1,3,5-7"
    assert scaling.cpu_list(set()) == ""
