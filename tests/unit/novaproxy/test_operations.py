from datetime import datetime, timezone

import pytest

from novaproxy import operations
from novaproxy.api import classify, policy


def server(status, task_state=None):
    return {"status": status, "OS-EXT-STS:task_state": task_state}


def test_every_classified_event_has_a_lifecycle_and_a_default_mode():
    assert set(operations.LIFECYCLES) == set(classify.EVENTS)
    assert set(policy.DEFAULT_MODES) == set(classify.EVENTS)


def test_votes_only_where_the_guest_runs_before_nova_acts():
    for event, mode in policy.DEFAULT_MODES.items():
        if mode == policy.VOTE:
            assert operations.LIFECYCLES[event].negotiable, event


@pytest.mark.parametrize("event, nova, expected", [
    ("reboot", server("ACTIVE", "rebooting"), "wait"),
    ("reboot", server("REBOOT"), "wait"),
    ("reboot", server("ACTIVE"), "end"),
    ("stop", server("SHUTOFF"), "end"),
    ("stop", server("ACTIVE"), "abort"),
    ("migrate", server("VERIFY_RESIZE"), "end"),
    ("migrate", server("ACTIVE", "resize_migrating"), "wait"),
    ("migrate", server("ERROR"), "abort"),
    # Nova answers confirmResize before it sets any task state.
    ("resize-confirm", server("VERIFY_RESIZE"), "wait"),
    ("resize-confirm", server("ACTIVE"), "end"),
    ("resize-revert", server("VERIFY_RESIZE"), "abort"),
    ("live-migrate", server("MIGRATING"), "wait"),
    ("live-migrate", server("ACTIVE"), "end"),
    ("shelve", server("SHELVED_OFFLOADED"), "end"),
    ("unshelve", server("ACTIVE"), "end"),
    ("delete", None, "gone"),
    ("delete", server("DELETED"), "gone"),
    ("delete", server("ACTIVE", "deleting"), "wait"),
])
def test_progress(event, nova, expected):
    assert operations.progress(event, nova) == expected


def test_nova_action_names_are_novas_own():
    instance_actions = pytest.importorskip("nova.compute.instance_actions")
    names = {v for k, v in vars(instance_actions).items() if k.isupper()}
    for lifecycle in operations.LIFECYCLES.values():
        # vCPU scaling is carried out in the guest: Nova records no action for it.
        assert lifecycle.nova_action in names or (
            lifecycle.in_guest and not lifecycle.nova_action), lifecycle.event


NOW = 1_800_000_000.0


def record(event="reboot", state="forwarded", prepared=True, **fields):
    return {"id": "op1", "event": event, "state": state, "prepared": prepared, "notify": True,
            "created": NOW - 10, **fields}


def action(kind="reboot", request_id="req-1", started=NOW - 9, message=None):
    return {"action": kind, "request_id": request_id, "message": message,
            "start_time": datetime.fromtimestamp(started, timezone.utc).replace(
                tzinfo=None).isoformat()}


def verdict(rec, nova, act=None, negotiating=False, superseded=False, now=NOW):
    return operations.verdict(rec, nova, act, negotiating, superseded, now)


def test_find_action_by_novas_request_id_first():
    mine, other = action(request_id="req-mine"), action(request_id="req-other")
    assert operations.find_action(record(nova_request="req-mine"), [other, mine]) is mine
    assert operations.find_action(record(nova_request="req-gone"), [other, mine]) is None


def test_find_action_by_kind_and_time_when_novas_answer_was_never_seen():
    rec = record(state="unknown", forwarded_at=NOW - 8)
    before = action(request_id="req-before", started=NOW - 60)
    wrong_kind = action(kind="stop", request_id="req-stop", started=NOW - 7)
    later, earliest = action(request_id="req-2", started=NOW - 5), action(started=NOW - 7)
    actions = [before, wrong_kind, later, earliest]
    assert operations.find_action(rec, actions) is earliest
    # One another record already names is not this one's.
    assert operations.find_action(rec, actions, taken={"req-1"}) is later
    # Nova's clock may be a little behind the proxy's: only if none started after.
    skewed = action(request_id="req-skew", started=NOW - 8 - operations.CLOCK_SKEW / 2)
    assert operations.find_action(rec, [before, skewed]) is skewed
    assert operations.find_action(rec, [skewed, later]) is later


def test_a_record_never_forwarded_has_no_action_of_novas():
    """Another request of the same kind just before (unasked) is not this one."""
    rec = record(state="preparing", created=NOW - 8)
    assert operations.find_action(rec, [action(started=NOW - 7)]) is None


@pytest.mark.parametrize("nova, act, step", [
    (server("ACTIVE", "rebooting"), action(), "wait"),
    (server("ACTIVE"), action(), "end"),
    (server("ACTIVE"), action(message="Error"), "abort"),  # failed, and settled back
    (server("ERROR"), action(message="Error"), "abort"),
    (server("SHUTOFF"), action(), "abort"),  # settled where a reboot does not leave it
    (None, action(), "gone"),
])
def test_a_forwarded_operation_is_judged_by_the_server_and_its_action(nova, act, step):
    assert verdict(record(nova_request="req-1"), nova, act).step == step


def test_a_migration_that_settles_on_the_same_host_did_not_happen():
    nova = {**server("ACTIVE"), "OS-EXT-SRV-ATTR:host": "h1"}
    moved = {**server("ACTIVE"), "OS-EXT-SRV-ATTR:host": "h2"}
    rec = record("live-migrate", host="h1")
    assert verdict(rec, nova, action("live-migration")).step == "abort"
    assert verdict(rec, moved, action("live-migration")).step == "end"


def test_an_evacuation_settled_before_nova_moved_the_server_waits_for_its_events():
    """Nova saves an evacuated server's status on the new host first and its host last,
    when its compute event finishes: until then the old host says nothing."""
    old_host = {**server("SHUTOFF"), "OS-EXT-SRV-ATTR:host": "h1"}
    rec = record("evacuate", host="h1", prepared=False)
    running = {**action("evacuate"), "events": [
        {"event": "conductor_rebuild_server", "finish_time": "2026-11-30T12:00:00"},
        {"event": "compute_rebuild_instance", "finish_time": None}]}
    finished = {**running, "events": [{**e, "finish_time": "2026-11-30T12:00:01"}
                                      for e in running["events"]]}
    assert verdict(rec, old_host, running).step == "wait"
    assert verdict(rec, old_host, finished).step == "failed"  # it did not move: no notice
    moved = {**server("ACTIVE"), "OS-EXT-SRV-ATTR:host": "h2"}
    assert verdict(rec, moved, finished).step == "end"


def test_a_record_its_proxy_never_forwarded_is_aborted_once_the_proxy_let_go():
    rec = record(state="preparing", owner="tok", decide_by=NOW + 60)
    assert verdict(rec, server("ACTIVE"), negotiating=True).step == "wait"
    assert verdict(rec, server("ACTIVE"), negotiating=False).step == "abort"


@pytest.mark.parametrize("state", ["forwarding", "unknown"])
def test_without_novas_action_the_outcome_waits_for_decide_by(state):
    rec = record(state=state, forwarded_at=NOW - 8, decide_by=NOW + 5)
    if state == "forwarding":
        assert verdict(rec, server("ACTIVE"), negotiating=True, now=NOW + 10).step == "wait"
    assert verdict(rec, server("ACTIVE"), now=NOW).step == "wait"
    late = verdict(rec, server("ACTIVE"), now=NOW + 6)
    assert late.step == "abort" and "never acted" in late.why
    # Nova's action, once it shows, is followed whatever the proxy saw.
    assert verdict(rec, server("ACTIVE"), action(), now=NOW + 6).step == "end"
    assert verdict(rec, server("ACTIVE", "rebooting"), action(), now=NOW + 6).step == "wait"


def test_a_refused_record_is_aborted_and_only_a_prepared_guest_hears_it():
    assert verdict(record(state="refused", why="Nova answered HTTP 403"),
                   server("ACTIVE")) == operations.Verdict("abort", "Nova answered HTTP 403")
    assert verdict(record(state="refused", prepared=False), server("ACTIVE")).step == "failed"


def test_a_prepared_guest_hears_its_end_when_it_runs_again():
    stop = record("stop", nova_request="req-1")
    waiting = verdict(stop, server("SHUTOFF"), action("stop"))
    assert (waiting.step, waiting.decided) == ("wait", "end")  # its group may hear it now
    assert verdict(stop, server("SHUTOFF", task_state="powering-off"),
                   action("stop")).decided == ""  # not over yet
    # The start that follows supersedes it: the stop ended, and the guest runs to hear it.
    assert verdict(stop, server("ACTIVE"), action("stop"), superseded=True).step == "end"


def test_an_operation_nobody_prepared_for_ends_only_where_it_brings_the_guest_back():
    assert verdict(record("start", prepared=False), server("ACTIVE"), action("start")
                   ).step == "end"
    # Since microversion 2.95 an evacuated server stays stopped: its end waits for a start.
    evacuate = record("evacuate", prepared=False)
    assert verdict(evacuate, server("SHUTOFF"), action("evacuate")).step == "wait"
    assert verdict(evacuate, server("ACTIVE"), action("evacuate"), superseded=True
                   ).step == "end"
    assert verdict(record("shelve-offload", prepared=False), server("SHELVED_OFFLOADED"),
                   action("shelveOffload")).step == "complete"
    monitored = record("reboot", prepared=False, notify=False)
    assert verdict(monitored, server("ACTIVE"), action()).step == "complete"


def test_a_superseded_operation_ended_unless_its_action_failed():
    # pause, then unpause before the agent looked: pause is not a failure.
    pause = record("pause", nova_request="req-1")
    assert verdict(pause, server("ACTIVE"), action("pause"), superseded=True).step == "end"
    assert verdict(pause, server("ACTIVE"), action("pause", message="Error"),
                   superseded=True).step == "abort"
    # Without the newer one, ACTIVE is not where a pause leaves the server.
    assert verdict(pause, server("ACTIVE"), action("pause")).step == "abort"


def test_closing_notices_have_one_request_id_per_operation():
    assert operations.closing_id("0" * 32) == "close-" + "0" * 32


def test_an_action_is_overtaken_by_a_later_lifecycle_action_only():
    stop = action("stop", request_id="req-stop", started=NOW - 9)
    start = action("start", request_id="req-start", started=NOW - 5)
    lock = action("lock", request_id="req-lock", started=NOW - 4)
    assert operations.overtaken(stop, [stop, start])
    assert not operations.overtaken(start, [stop, start])
    assert not operations.overtaken(stop, [stop, lock])  # not a lifecycle action
    assert not operations.overtaken(None, [stop, start])


@pytest.mark.parametrize("state", ["forwarding", "unknown"])
def test_a_scale_its_proxy_left_is_decided_by_the_guests_view(state):
    rec = record("scale-down", state=state, owner="tok", decide_by=NOW - 1)
    # Its proxy still at it, or the guest's view not read: it waits.
    assert verdict(rec, server("ACTIVE"), negotiating=True).step == "wait"
    happened = operations.verdict(rec, server("ACTIVE"), None, False, False, NOW,
                                  (True, "the guest shows 0 online"))
    assert (happened.step, happened.why) == ("end", "the guest shows 0 online")
    assert operations.verdict(rec, server("ACTIVE"), None, False, False, NOW,
                              (False, "not planned")).step == "abort"
    unread = operations.verdict(rec, server("ACTIVE"), None, False, False, NOW,
                                (None, "unreadable"))
    assert unread.step == "wait"  # not "Nova never acted": Nova never does here


def test_a_scale_the_agent_settled_is_closed_like_any_other():
    assert verdict(record("scale-down", state="forwarded"), server("ACTIVE")).step == "end"
    assert verdict(record("scale-up", state="refused", why="guest refused"),
                   server("ACTIVE")).step == "abort"
