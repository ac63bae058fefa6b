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


def test_a_plan_says_which_way_and_what_changes():
    four = frozenset(range(4))
    down = scaling.plan(Request(online=2), four, four, Policy(True, 1, 4))
    assert (down.event, down.count) == (scaling.SCALE_DOWN, 2)
    assert down.details() == {"online": [0, 1, 2, 3], "target": 2, "offline": [2, 3]}
    assert down.change((1,)) == {1, 3}  # a vCPU the applications named goes first
    assert scaling.after(down.event, four, frozenset({1, 3})) == {0, 2}
    up = scaling.plan(Request(step=1), frozenset({0, 2}), four, Policy(True, 1, 4))
    assert up.event == scaling.SCALE_UP
    assert up.details() == {"online": [0, 2], "target": 3, "added": [1]}
    assert up.change((3,)) == {1}  # names count only when vCPUs go offline


def test_a_plan_never_asks_for_more_vcpus_than_the_guest_has():
    # A flavor's vCPUs and the guest's may differ (a resize not yet seen by the guest).
    with pytest.raises(ScaleError, match="out of range"):
        scaling.plan(Request(online=4), frozenset({0, 1}), frozenset({0, 1}), Policy(True, 1, 4))


def test_the_names_are_read_from_each_voter_in_order():
    voters = [{"name": "a", "vote": "accept", "reason": "", "offline": [3]},
              {"name": "b", "vote": "accept", "reason": ""},
              {"name": "c", "vote": "accept", "reason": "", "offline": [1, 2]}]
    assert scaling.named(voters) == (3, 1, 2)


def test_closing_details_carry_the_set_after_an_end_and_the_prepares_for_an_abort():
    record = {"event": scaling.SCALE_DOWN, "change": [3], "after": [0, 1, 2],
              "details": {"online": [0, 1, 2, 3], "target": 3, "offline": [3]}}
    assert scaling.closing_details(record, end=True) == {
        "online": [0, 1, 2], "target": 3, "offline": [3]}
    assert scaling.closing_details(record, end=False) == record["details"]
    assert scaling.closing_details({**record, "event": scaling.SCALE_UP, "change": [1],
                                    "after": [0, 1]}, end=True)["added"] == [1]


def test_the_guests_view_tells_whether_an_applied_change_happened():
    record = {"after": [0, 1]}
    assert scaling.outcome(record, frozenset({0, 1}))[0] is True
    happened, why = scaling.outcome(record, frozenset({0, 1, 2}))
    assert happened is False and "not the planned 0-1" in why
    assert scaling.outcome({}, frozenset({0, 1}))[0] is False  # never begun
    assert scaling.outcome(record, None)[0] is None  # unreadable: wait
