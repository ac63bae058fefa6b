"""The group wire contract: the outbox file, receipts, deliveries and socket messages,
read as the host reads what an untrusted guest wrote."""

import json

import pytest

from guestd import group_protocol as gp
from guestd import protocol

EPOCH = "0123456789abcdef"
PEER = "6f1c9a52-54b1-4a43-9a3c-2f9d51c7f0e1"


def entries(n=3):
    return [gp.message_entry(1, "db", gp.BROADCAST, {"role": "active"}),
            gp.message_entry(2, "db", PEER, "text"), gp.status_entry(3, "db")][:n]


def test_outbox_round_trips():
    data = gp.outbox(EPOCH, entries())
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert gp.parse_outbox(data) == {"v": 1, "epoch": EPOCH, "messages": entries()}
    assert gp.parse_outbox(gp.outbox(EPOCH, []))["messages"] == []


def test_outbox_drops_unknown_fields_and_lowers_uuids():
    raw = {"v": 3, "epoch": EPOCH, "extra": 1, "messages": [
        {"seq": 4, "kind": "message", "to": PEER.upper(), "app": "db", "body": None, "x": 2}]}
    assert gp.parse_outbox(json.dumps(raw).encode())["messages"] == [
        gp.message_entry(4, "db", PEER, None)]


def hostile(change):
    raw = {"v": 1, "epoch": EPOCH, "messages": entries()}
    change(raw)
    return json.dumps(raw).encode()


@pytest.mark.parametrize("data", [
    b"", b"garbage", b"[]", b"\xff\xfe", b"{" * 100_000, b"[" * 200_000,
    b'{"v": 0, "messages": []}',
    b" " * (gp.MAX_OUTBOX_BYTES + 1),
    hostile(lambda r: r.update(epoch="short")),
    hostile(lambda r: r.update(epoch="0123456789ABCDEG")),
    hostile(lambda r: r.update(epoch=12)),
    hostile(lambda r: r.update(messages={"seq": 1})),
    hostile(lambda r: r.update(messages=[
        gp.message_entry(i, "db", "*", i) for i in range(1, gp.MAX_OUTBOX + 2)])),
    hostile(lambda r: r["messages"].reverse()),  # seq decreasing
    hostile(lambda r: r["messages"][1].update(seq=1)),  # seq repeated
    hostile(lambda r: r["messages"][0].update(seq=0)),
    hostile(lambda r: r["messages"][0].update(seq=-5)),
    hostile(lambda r: r["messages"][0].update(seq=True)),
    hostile(lambda r: r["messages"][0].update(seq="1")),
    hostile(lambda r: r["messages"][0].update(seq=1.5)),
    hostile(lambda r: r["messages"][0].update(seq=2**60)),
    hostile(lambda r: r["messages"][0].update(kind="exec")),
    hostile(lambda r: r["messages"][0].update(to="someone")),
    hostile(lambda r: r["messages"][0].update(to=["*"])),
    hostile(lambda r: r["messages"][0].update(to=PEER.replace("-", "x"))),
    hostile(lambda r: r["messages"][0].update(app="")),
    hostile(lambda r: r["messages"][0].update(app="a" * 65)),
    hostile(lambda r: r["messages"][0].update(app=None)),
    hostile(lambda r: r["messages"][0].pop("body")),
    hostile(lambda r: r["messages"][0].update(body="x" * gp.MAX_BODY)),  # quotes: over
    hostile(lambda r: r["messages"].append("entry")),
    # A body nested deeper than json reads back, though within MAX_BODY.
    hostile(lambda r: r["messages"][0].update(body="NEST")).replace(
        b'"NEST"', b"[" * 2000 + b"]" * 2000),
])
def test_hostile_outbox_is_refused(data):
    with pytest.raises(protocol.ProtocolError):
        gp.parse_outbox(data)


def test_body_is_measured_as_compact_utf8():
    assert gp.check_body("x" * (gp.MAX_BODY - 2)) == "x" * (gp.MAX_BODY - 2)
    assert gp.body_size({"a": [1, 2]}) == len(b'{"a":[1,2]}')
    assert gp.body_size("é") == 4  # two bytes in UTF-8, not six as \u00e9
    with pytest.raises(gp.Refused) as refused:
        gp.check_body("é" * gp.MAX_BODY)
    assert refused.value.reason == gp.TOO_LARGE
    for bad in (float("nan"), {1j}, object()):
        with pytest.raises(protocol.ProtocolError):
            gp.body_size(bad)


def test_receipt_round_trips_and_keeps_other_fields():
    results = [gp.result(1, gp.ACCEPTED, message="m1", members={PEER: "pending"}),
               gp.result(2, gp.REFUSED, "rate-limited"),
               gp.result(3, gp.ACCEPTED, group={"group": "g", "members": {}})]
    details = gp.receipt(EPOCH, 3, results)
    assert gp.parse_receipt(json.loads(json.dumps(details))) == details
    assert gp.parse_receipt({"epoch": EPOCH, "acked": 0}) == gp.receipt(EPOCH, 0, [])


@pytest.mark.parametrize("change", [
    {"epoch": None}, {"acked": -1}, {"acked": "3"}, {"results": "all"},
    {"results": [{"seq": 1}]}, {"results": [{"seq": 1, "status": "maybe"}]},
    {"results": [{"seq": 0, "status": "accepted"}]},
    {"results": [{"seq": 1, "status": "refused", "reason": 5}]},
    {"results": [gp.result(1, gp.ACCEPTED)] * (gp.MAX_RESULTS + 1)},
])
def test_malformed_receipt_is_refused(change):
    with pytest.raises(protocol.ProtocolError):
        gp.parse_receipt({**gp.receipt(EPOCH, 3, []), **change})


def details(**change):
    return {**gp.message_details("m" * 32, PEER, "g1", "*", EPOCH, 7, {"k": "v"}, 10.5, 70.5),
            **change}


def test_message_details_and_what_applications_get():
    assert gp.parse_message_details(details()) == details()
    assert gp.group_message(details()) == {
        "v": 1, "type": gp.GROUP_MESSAGE, "id": "m" * 32, "from": PEER, "group": "g1",
        "to": "*", "seq": 7, "body": {"k": "v"}, "sent_at": 10.5}


@pytest.mark.parametrize("change", [
    {"from": "*"}, {"from": None}, {"id": ""}, {"seq": 0}, {"epoch": "x"},
    {"sent_at": "now"}, {"expires": True}, {"group": 5}, {"to": "all"},
])
def test_malformed_message_details_are_refused(change):
    with pytest.raises(protocol.ProtocolError):
        gp.parse_message_details(details(**change))
    with pytest.raises(protocol.ProtocolError):
        gp.parse_message_details({k: v for k, v in details().items() if k != "body"})


def test_a_message_is_delivered_once_someone_in_the_guest_took_it():
    took = [protocol.voter("db", protocol.ACCEPT)]
    assert gp.delivered(protocol.ACCEPT, took)
    assert gp.delivered(protocol.REJECT, [])  # handed out already, under another id
    assert not gp.delivered(protocol.ACCEPT, [])  # nobody takes group messages yet
    assert not gp.delivered("timeout", took) and not gp.delivered("unreachable", [])


def test_group_requests_may_carry_more_details_than_others():
    big = {"results": [gp.result(i, gp.ACCEPTED, members={PEER: "pending"} | {
        f"{i:08d}-0000-0000-0000-000000000000": "pending" for i in range(16)})
        for i in range(1, 17)]}
    assert len(json.dumps(big)) > protocol.MAX_DETAILS
    req = protocol.request("r1", "i1", protocol.GROUP, protocol.RECEIPT, 5.0, big)
    assert protocol.parse_request(req)["details"] == big
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_request({**req, "event": "reboot"})


def test_socket_messages():
    assert gp.parse_group_send(gp.group_send(PEER.upper(), [1], "r1")) == (PEER, [1])
    assert gp.parse_ref(gp.group_send("*", 1, "r1")) == "r1"
    assert gp.parse_ref({"ref": 5}) == ""
    for bad in ({"type": gp.GROUP_SEND, "to": "*"}, gp.group_send("nobody", 1)):
        with pytest.raises(protocol.ProtocolError):
            gp.parse_group_send(bad)
    with pytest.raises(gp.Refused):
        gp.parse_group_send(gp.group_send("*", "x" * gp.MAX_BODY))
    refused = gp.group_refused(gp.OUTBOX_FULL, "full", "r2")
    assert refused["type"] == protocol.FAILURE and refused["reason"] == gp.OUTBOX_FULL
    assert gp.group_result(gp.result(2, gp.REFUSED, "expired")) == {
        "v": 1, "type": gp.GROUP_RESULT, "seq": 2, "status": "refused", "reason": "expired"}


def test_a_final_result_is_delivered_or_says_how_many_it_missed():
    report = gp.parse_report_details(gp.report_details(
        "m1", "g", {"6f1c9a52-54b1-4a43-9a3c-2f9d51c7f0e1": gp.DELIVERED}))
    assert gp.final_result(4, report) == gp.result(4, gp.DELIVERED, message="m1",
                                                   members=report["members"])
    missed = {**report["members"], "0b7e3c1d-9a2f-4e55-8c61-5d4a3b2c1f00": gp.EXPIRED}
    assert gp.final_result(4, {**report, "members": missed}) == gp.result(
        4, gp.EXPIRED, "not delivered to 1 member(s) before it expired", message="m1",
        members=missed)
    with pytest.raises(gp.ProtocolError):  # a report is final: nobody is pending
        gp.parse_report_details(gp.report_details("m1", "g", {"6f1c9a52-54b1-4a43-9a3c-"
                                                              "2f9d51c7f0e1": gp.PENDING}))
