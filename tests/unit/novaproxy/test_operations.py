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


def test_end_notices_only_where_the_guest_runs():
    assert operations.tells_guest("evacuate", server("ACTIVE"))
    assert not operations.tells_guest("evacuate", server("SHUTOFF"))  # microversion >= 2.95
    assert operations.tells_guest("resize", server("VERIFY_RESIZE"))
    assert not operations.tells_guest("resize-confirm", server("SHUTOFF"))
    assert not operations.tells_guest("stop", server("SHUTOFF"))


def test_an_older_operation_is_superseded_by_a_newer_one():
    # pause, then unpause before the agent looked: pause is not a failure.
    assert operations.steps(["pause", "unpause"], server("ACTIVE")) == ["superseded", "end"]
    assert operations.steps(["pause", "unpause"], server("PAUSED", "unpausing")) == [
        "wait", "wait"]
    assert operations.steps(["reboot"], server("SHUTOFF")) == ["abort"]
