"""Server-group messaging in the guest: applications queue messages in the outbox the
host reads, receipts come back through the spool, and messages delivered as host
requests reach applications and group hooks once (guestd, its client library, hook
scripts and guestd-ctl, as real processes)."""

import json
import subprocess
import time

import pytest

from guestd import group_protocol as gp
from guestd import protocol
from guestd.client import GroupError, GroupMessage, GroupResult
from harness.guestd_peers import app, group_request, log_count, outbox, spool, wait_answer

PEER = "6f1c9a52-54b1-4a43-9a3c-2f9d51c7f0e1"
SENDER = "0b7e3c1d-9a2f-4e55-8c61-5d4a3b2c1f00"


def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def delivery(seq, body, epoch="a" * 16, sender=SENDER):
    return gp.message_details(f"m{seq}{epoch[:4]}", sender, "grp-1", gp.BROADCAST, epoch,
                              seq, body, 100.0 + seq, 160.0 + seq)


def ctl_request(guest, req):
    """One request through guestd-ctl, as the agent relays it."""
    done = subprocess.run(guest.guestd_ctl_argv, input=json.dumps(req).encode(),
                          capture_output=True, timeout=10,
                          env={"GUESTD_SOCKET": guest.guestd_socket})
    return json.loads(done.stdout)


def test_broadcast_is_in_the_outbox_until_a_receipt_and_its_result_reaches_the_sender(guest):
    results, others = [], []
    db = app(guest, "db", result=results.append)
    app(guest, "web", result=others.append)
    assert outbox(guest) is None  # nothing to send: no file for the host to read
    assert db.broadcast({"role": "active"}) == 1
    assert db.send(PEER.upper(), "hi") == 2
    assert db.group_status() == 3
    box = outbox(guest)
    assert box["messages"] == [gp.message_entry(1, "db", "*", {"role": "active"}),
                               gp.message_entry(2, "db", PEER, "hi"), gp.status_entry(3, "db")]
    details = gp.receipt(box["epoch"], 2, [
        gp.result(1, gp.ACCEPTED, message="m1", members={PEER: "pending"}),
        gp.result(2, gp.REFUSED, "rate-limited")])
    req = group_request(guest, protocol.RECEIPT, details)
    answer = protocol.parse_answer(wait_answer(spool(guest, req)), req["id"], guest.instance)
    assert answer["result"] == protocol.ACCEPT
    assert [e["seq"] for e in outbox(guest)["messages"]] == [3]
    until(lambda: len(results) == 2)
    assert results == [GroupResult(1, "accepted", message="m1", members={PEER: "pending"}),
                       GroupResult(2, "refused", "rate-limited")]
    # The status entry's answer, through guestd-ctl this time; nobody else hears it.
    status = {"group": "grp-1", "name": "pair", "policy": "anti-affinity", "members": {}}
    answer = ctl_request(guest, group_request(guest, protocol.RECEIPT, gp.receipt(
        box["epoch"], 3, [gp.result(3, gp.ACCEPTED, group=status)])))
    assert answer["result"] == protocol.ACCEPT and outbox(guest) is None
    until(lambda: len(results) == 3)
    assert results[2] == GroupResult(3, "accepted", group=status) and others == []
    # The host's final report of the message: a second result for seq 1, to db alone.
    req = group_request(guest, protocol.REPORT, gp.report_details(
        "m1", "grp-1", {PEER: gp.EXPIRED}))
    answer = protocol.parse_answer(wait_answer(spool(guest, req)), req["id"], guest.instance)
    assert answer["result"] == protocol.ACCEPT and [v["name"] for v in answer["voters"]] == [
        "db"]
    until(lambda: len(results) == 4)
    assert results[3] == GroupResult(1, gp.EXPIRED, "not delivered to 1 member(s) before it "
                                     "expired", message="m1", members={PEER: gp.EXPIRED})
    # One it does not know (sent before guestd started): answered, told to nobody.
    req = group_request(guest, protocol.REPORT, gp.report_details(
        "m9", "grp-1", {PEER: gp.DELIVERED}))
    answer = protocol.parse_answer(wait_answer(spool(guest, req)), req["id"], guest.instance)
    assert answer["result"] == protocol.ACCEPT and answer["voters"] == []
    time.sleep(0.2)
    assert len(results) == 4 and others == []


def test_a_message_reaches_each_application_once_even_when_delivered_twice(guest):
    seen, late = [], []
    app(guest, "db", message=seen.append)
    app(guest, "votes-only", events=["reboot"])  # not handed group messages
    app(guest, "grp", events=["reboot"], message=late.append)  # on_message asks for group
    first = group_request(guest, protocol.MESSAGE, delivery(7, {"k": "v"}), rid="msg-m7")
    answers = [ctl_request(guest, first) for _ in range(2)]
    assert answers[0] == answers[1] and answers[0]["result"] == protocol.ACCEPT
    assert sorted(v["name"] for v in answers[0]["voters"]) == ["db", "grp"]
    # Queued twice by the sender's agent: another request id, the same sender/epoch/seq.
    again = group_request(guest, protocol.MESSAGE, delivery(7, {"k": "v"}), rid="msg-other")
    repeated = wait_answer(spool(guest, again))
    assert repeated["result"] == protocol.REJECT  # the host counts it delivered
    assert gp.delivered(repeated["result"], repeated["voters"])
    ctl_request(guest, group_request(guest, protocol.MESSAGE, delivery(8, [1, 2])))
    # Another epoch of the same sender (its guestd restarted) counts anew.
    ctl_request(guest, group_request(guest, protocol.MESSAGE, delivery(7, "new", "b" * 16)))
    until(lambda: len(seen) == 3)
    time.sleep(0.2)
    assert [(m.sender, m.seq, m.body) for m in seen] == [
        (SENDER, 7, {"k": "v"}), (SENDER, 8, [1, 2]), (SENDER, 7, "new")]
    assert seen[0] == GroupMessage(f"m7{'a' * 4}", SENDER, "grp-1", "*", 7, {"k": "v"}, 107.0)
    assert [m.seq for m in late] == [7, 8, 7]
    assert log_count(guest, "already delivered") == 1


def test_a_message_nobody_takes_yet_is_not_remembered_and_reaches_a_late_application_once(
        guest):
    req = group_request(guest, protocol.MESSAGE, delivery(9, "early"), rid="msg-m9")
    early = ctl_request(guest, req)  # early in a boot: no application registered yet
    assert early["result"] == protocol.ACCEPT and early["voters"] == []
    assert not gp.delivered(early["result"], early["voters"])  # the host tries again
    seen = []
    app(guest, "late", message=seen.append)
    again = ctl_request(guest, req)  # the same request id: handled afresh, not from memory
    assert [v["name"] for v in again["voters"]] == ["late"]
    assert gp.delivered(again["result"], again["voters"])
    assert ctl_request(guest, req) == again  # remembered now
    until(lambda: seen)
    time.sleep(0.2)
    assert [(m.id, m.body) for m in seen] == [(f"m9{'a' * 4}", "early")]
    assert log_count(guest, "nobody takes group messages yet") == 1


HOOK = """#!/bin/sh
cat > "$0.stdin"
echo "$1 $2" > "$0.args"
"""


def test_a_group_hook_gets_the_message_on_stdin_within_the_deadline(guest):
    hook = guest.add_group_hook("10-record", HOOK)
    guest.add_group_hook("20-hung", "#!/bin/sh\nsleep 30\n")
    details = delivery(3, {"text": "é" * 100})
    req = group_request(guest, protocol.MESSAGE, details, timeout=1.0)
    started = time.monotonic()
    answer = wait_answer(spool(guest, req))
    assert time.monotonic() - started < 2.0
    assert answer["result"] == protocol.ACCEPT
    assert {v["name"]: v["vote"] for v in answer["voters"]} == {
        "10-record": protocol.ACCEPT, "20-hung": protocol.TIMEOUT}
    with open(hook + ".stdin") as f:
        assert json.load(f) == gp.group_message(details)
    with open(hook + ".args") as f:
        assert f.read().split() == [protocol.GROUP, protocol.MESSAGE]
    # Vote and notice hooks are not asked about group messages.
    vote_hook = guest.add_hook("vote", HOOK)
    ctl_request(guest, group_request(guest, protocol.MESSAGE, delivery(4, None)))
    with pytest.raises(FileNotFoundError):
        open(vote_hook + ".stdin")


def test_too_large_and_outbox_full_are_refused_at_once_with_their_reason(guest):
    db = app(guest, "db")
    refusals = {}
    for name, call in {"too-large": lambda: db.broadcast("x" * gp.MAX_BODY),
                       "over-a-frame": lambda: db.broadcast("x" * protocol.MAX_FRAME),
                       "invalid": lambda: db.send("not-a-member", 1),
                       "not-json": lambda: db.broadcast(float("nan"))}.items():
        started = time.monotonic()
        with pytest.raises(GroupError) as refused:
            call()
        assert time.monotonic() - started < 1.0
        refusals[name] = refused.value.reason
    assert refusals == {"too-large": gp.TOO_LARGE, "over-a-frame": gp.TOO_LARGE,
                        "invalid": gp.INVALID, "not-json": gp.INVALID}
    assert [db.broadcast(n) for n in range(gp.MAX_OUTBOX)] == list(range(1, gp.MAX_OUTBOX + 1))
    started = time.monotonic()
    for call in (lambda: db.broadcast("one more"), db.group_status):
        with pytest.raises(GroupError) as refused:
            call()
        assert refused.value.reason == gp.OUTBOX_FULL
    assert time.monotonic() - started < 1.0
    assert len(outbox(guest)["messages"]) == gp.MAX_OUTBOX
    # The host took some: there is room again.
    req = group_request(guest, protocol.RECEIPT, gp.receipt(outbox(guest)["epoch"], 4, []))
    wait_answer(spool(guest, req))
    assert db.broadcast("room again") == gp.MAX_OUTBOX + 1


def test_a_restarted_guestd_has_a_new_epoch_and_ignores_the_old_ones_receipts(guest):
    db = app(guest, "db")
    db.broadcast("before")
    old = outbox(guest)["epoch"]
    guest.restart_guestd()
    assert outbox(guest) is None  # the old epoch's entries went with the old guestd
    until(lambda: db.registered.is_set())
    assert db.broadcast("after") == 1
    assert outbox(guest)["epoch"] != old
    req = group_request(guest, protocol.RECEIPT, gp.receipt(old, 5, [gp.result(1, "accepted")]))
    assert wait_answer(spool(guest, req))["result"] == protocol.ACCEPT
    assert outbox(guest)["messages"] == [gp.message_entry(1, "db", "*", "after")]


@pytest.mark.parametrize("phase, details", [
    (protocol.MESSAGE, {"body": 1}),
    (protocol.MESSAGE, {**delivery(1, 1), "from": "*"}),
    (protocol.RECEIPT, {"epoch": "x", "acked": 1}),
    (protocol.RECEIPT, {"epoch": "a" * 16, "acked": 1, "results": [{"seq": "1"}]}),
    (protocol.REPORT, {"message": "m1", "group": "g", "members": {PEER: "pending"}}),
    (protocol.REPORT, {"message": "m1", "group": "g", "members": ["x"]}),
    ("vote", {}),
])
def test_malformed_group_requests_get_an_error_and_guestd_carries_on(guest, phase, details):
    answer = wait_answer(spool(guest, group_request(guest, phase, details)))
    assert answer["type"] == protocol.FAILURE
    answer = ctl_request(guest, group_request(guest, protocol.MESSAGE, delivery(1, 1)))
    assert answer["result"] == protocol.ACCEPT
