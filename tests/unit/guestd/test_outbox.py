"""guestd's outbox part: seq numbering, refusals, the file, and receipts."""

import os
import stat

import pytest

from guestd import group_protocol as gp
from guestd.outbox import UNWRITABLE, Outbox

PEER = "6f1c9a52-54b1-4a43-9a3c-2f9d51c7f0e1"


def read(box):
    with open(box.path, "rb") as f:
        return gp.parse_outbox(f.read())


@pytest.fixture
def box(tmp_path):
    box = Outbox(str(tmp_path / "run" / "outbox.json"))
    box.open()
    return box


def test_each_start_has_its_own_epoch_and_no_file_until_something_is_sent(box):
    assert not os.path.exists(box.path)  # the host's poll: one failed open, nothing read
    box.send("db", "*", 1)
    assert read(box)["epoch"] == box.epoch
    assert stat.S_IMODE(os.stat(box.path).st_mode) == 0o600
    again = Outbox(box.path)  # a restarted guestd: the old epoch's entries are dropped
    again.open()
    assert again.epoch != box.epoch and not os.path.exists(again.path)
    again.send("db", "*", 2)
    assert read(again)["epoch"] == again.epoch
    assert [e["seq"] for e in read(again)["messages"]] == [1]


def test_the_file_goes_once_a_receipt_acknowledges_every_entry(box):
    box.send("db", "*", 1)
    box.send("db", "*", 2)
    box.receipt(gp.receipt(box.epoch, 1, [gp.result(1, gp.ACCEPTED)]))
    assert [e["seq"] for e in read(box)["messages"]] == [2]
    box.receipt(gp.receipt(box.epoch, 2, [gp.result(2, gp.ACCEPTED)]))
    assert not os.path.exists(box.path) and len(box) == 0
    assert box.send("db", "*", 3) == 3  # numbering carries on in the epoch


def test_entries_are_numbered_from_one_and_written_at_once(box):
    assert box.send("db", "*", {"a": 1}) == 1
    assert box.send("web", PEER, "hi") == 2
    assert box.status("db") == 3
    assert read(box)["messages"] == [gp.message_entry(1, "db", "*", {"a": 1}),
                                     gp.message_entry(2, "web", PEER, "hi"),
                                     gp.status_entry(3, "db")]


def test_too_large_and_full_are_refused_with_their_reason(box):
    with pytest.raises(gp.Refused) as refused:
        box.send("db", "*", "x" * gp.MAX_BODY)
    assert refused.value.reason == gp.TOO_LARGE
    for n in range(gp.MAX_OUTBOX):
        assert box.send("db", "*", n) == n + 1
    with pytest.raises(gp.Refused) as refused:
        box.status("db")
    assert refused.value.reason == gp.OUTBOX_FULL
    assert len(read(box)["messages"]) == gp.MAX_OUTBOX
    # A receipt makes room; numbering carries on.
    box.receipt(gp.receipt(box.epoch, gp.MAX_OUTBOX, []))
    assert box.send("db", "*", "again") == gp.MAX_OUTBOX + 1


def test_receipt_drops_what_was_acked_and_routes_results(box):
    for app in ("db", "web", "db"):
        box.send(app, "*", app)
    routed = box.receipt(gp.receipt(box.epoch, 2, [
        gp.result(1, gp.ACCEPTED, message="m1"), gp.result(2, gp.REFUSED, "rate-limited"),
        gp.result(9, gp.ACCEPTED)]))  # no such entry: not routed
    assert routed == [("db", gp.result(1, gp.ACCEPTED, message="m1")),
                      ("web", gp.result(2, gp.REFUSED, "rate-limited"))]
    assert [e["seq"] for e in read(box)["messages"]] == [3] and len(box) == 1
    # Again (an agent that restarted), or another epoch's: nothing changes.
    assert box.receipt(gp.receipt(box.epoch, 2, [gp.result(1, gp.ACCEPTED)])) == []
    assert box.receipt(gp.receipt("f" * 16, 3, [gp.result(3, gp.ACCEPTED)])) == []
    assert len(box) == 1


def test_unwritable_outbox_refuses_and_keeps_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    box = Outbox(str(blocker / "outbox.json"))
    box.open()  # logged, not raised
    with pytest.raises(gp.Refused) as refused:
        box.send("db", "*", 1)
    assert refused.value.reason == UNWRITABLE and len(box) == 0
