import pytest

from guestd.client import Notice
from harness.pairing import Heard, Pairing


def fed(*notices):
    """A Pairing fed ``(operation, event, phase)`` in order; request ids are numbered."""
    pairing = Pairing()
    for number, (operation, event, phase) in enumerate(notices):
        pairing.feed(operation, event, phase, f"r{number}")
    return pairing


def test_a_prepare_and_its_end_pair():
    pairing = fed(("a", "reboot", "vote"), ("a", "reboot", "prepare"), ("a", "reboot", "end"))
    pairing.assert_paired()
    assert pairing.violations() == [] and pairing.unpaired_closings() == []
    assert pairing.counts() == {"votes": 1, "prepares": 1, "ends": 1, "aborts": 0,
                                "doubled": 0, "unpaired_closings": 0, "open": 0,
                                "anonymous": 0}


def test_a_prepare_and_its_abort_pair():
    pairing = fed(("a", "stop", "prepare"), ("a", "stop", "abort"))
    pairing.assert_paired()
    assert pairing.counts()["aborts"] == 1 and pairing.open_prepares() == []


def test_a_second_closing_is_doubled():
    pairing = fed(("a", "reboot", "prepare"), ("a", "reboot", "end"), ("a", "reboot", "end"))
    assert pairing.counts()["doubled"] == 1
    assert pairing.violations() == [
        "doubled: reboot end of a (request r2) after reboot end of a (request r1)"]
    with pytest.raises(AssertionError, match="doubled"):
        pairing.assert_paired()


def test_an_abort_then_an_end_is_doubled_too():
    pairing = fed(("a", "reboot", "prepare"), ("a", "reboot", "abort"), ("a", "reboot", "end"))
    assert pairing.counts()["doubled"] == 1


def test_an_abort_without_a_prepare_is_counted_not_wrong():
    # The guest may never have got the prepare the host sent before it failed.
    pairing = fed(("a", "reboot", "abort"))
    pairing.assert_paired()
    assert pairing.unpaired_closings() == [Heard("a", "reboot", "abort", "r0")]
    assert pairing.counts()["unpaired_closings"] == 1


def test_a_prepare_before_the_older_operation_closed_is_out_of_order():
    pairing = fed(("a", "reboot", "prepare"), ("b", "stop", "prepare"),
                  ("a", "reboot", "end"), ("b", "stop", "end"))
    assert pairing.violations() == [
        "out of order: stop prepare of b (request r1) while reboot prepare of a (request r0)"
        " is still open"]
    assert pairing.open_prepares() == []
    with pytest.raises(AssertionError, match="out of order"):
        pairing.assert_paired()


def test_operations_one_after_another_are_in_order():
    pairing = fed(("a", "reboot", "prepare"), ("a", "reboot", "end"),
                  ("b", "stop", "prepare"), ("b", "stop", "abort"))
    pairing.assert_paired()


def test_resize_then_its_confirm_whose_end_has_no_prepare():
    # confirmResize is not negotiated: its end is a closing with no prepare, and fine.
    pairing = fed(("r", "resize", "vote"), ("r", "resize", "prepare"), ("r", "resize", "end"),
                  ("c", "resize-confirm", "end"))
    pairing.assert_paired()
    assert pairing.unpaired_closings() == [Heard("c", "resize-confirm", "end", "r3")]
    assert pairing.counts()["ends"] == 2


def test_a_closing_for_another_event_is_wrong():
    pairing = fed(("a", "reboot", "prepare"), ("a", "stop", "end"))
    assert pairing.violations() == [
        "wrong event: stop end of a (request r1) closes reboot prepare of a (request r0)"]


def test_a_second_prepare_for_one_operation_is_wrong():
    pairing = fed(("a", "reboot", "prepare"), ("a", "reboot", "prepare"), ("a", "reboot", "end"))
    assert pairing.violations() == ["second prepare: reboot prepare of a (request r1)"]


def test_a_prepare_never_closed_is_open_and_fails():
    pairing = fed(("a", "reboot", "prepare"), ("a", "reboot", "end"), ("b", "stop", "prepare"))
    assert pairing.violations() == []
    assert pairing.open_prepares() == [Heard("b", "stop", "prepare", "r2")]
    assert pairing.counts()["open"] == 1
    with pytest.raises(AssertionError, match=r"open: stop prepare of b \(request r2\)"):
        pairing.assert_paired()


def test_notices_without_an_operation_are_keyed_by_request_id_and_reported():
    pairing = Pairing()
    for nid, phase in (("r1.1", "vote"), ("r2.2", "prepare"), ("close-x.3", "end")):
        pairing.hear(Notice(nid, "i1", "reboot", phase, 5.0, {}))
    assert pairing.counts()["anonymous"] == 3
    # Different request ids: the prepare stays open and the end pairs with nothing.
    assert pairing.open_prepares() == [Heard("<none: r2>", "reboot", "prepare", "r2")]
    assert pairing.counts()["unpaired_closings"] == 1


def test_hear_takes_the_operation_from_the_details_and_the_request_id_from_guestds_id():
    pairing = Pairing()
    pairing.hear(Notice("r1.7", "i1", "reboot", "prepare", 5.0, {"operation": "op1"}))
    pairing.hear(Notice("close-op1.8", "i1", "reboot", "end", 5.0, {"operation": "op1"}))
    pairing.assert_paired()
    assert pairing.heard() == [Heard("op1", "reboot", "prepare", "r1"),
                               Heard("op1", "reboot", "end", "close-op1")]
