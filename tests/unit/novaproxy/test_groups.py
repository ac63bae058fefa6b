import json
import uuid

from guestd import group_protocol as gp
from guestd import protocol
from novaproxy import flavor, groups

A, B, C, D = (str(uuid.UUID(int=n)) for n in range(1, 5))
EPOCH = "0123456789abcdef"


def server(on=True, opt_out=False, status="ACTIVE"):
    return {"status": status, "OS-EXT-SRV-ATTR:host": "c1",
            "flavor": {"extra_specs": {flavor.GROUP_MESSAGING: "true" if on else "false"}},
            "metadata": {flavor.GROUP_MESSAGING: "no"} if opt_out else {}}


def test_a_member_takes_messages_only_if_its_flavor_says_so_and_it_did_not_opt_out():
    assert groups.member_from(A, server(), ["g"]) == groups.Member(
        A, known=True, messaging=True, status="ACTIVE", host="c1", group="g")
    assert not groups.member_from(A, server(on=False), ["g"]).messaging
    assert not groups.member_from(A, server(opt_out=True), ["g"]).messaging
    assert groups.member_from(A, None, []) == groups.Member(A, known=False)


GROUP = groups.Group("g", "pair", "anti-affinity", (A, B, C, D))
PEERS = {A: groups.member_from(A, server(), ["g"]), B: groups.member_from(B, server(), ["g"]),
         C: groups.member_from(C, server(on=False), ["g"]), D: groups.Member(D, known=False)}


def test_the_sender_needs_messaging_a_group_and_a_bounded_group():
    assert groups.sender_refusal(PEERS[A], GROUP) == ""
    assert groups.sender_refusal(PEERS[C], GROUP) == groups.NOT_ENABLED
    assert groups.sender_refusal(PEERS[D], GROUP) == groups.NOT_ENABLED
    assert groups.sender_refusal(PEERS[A], None) == groups.NOT_IN_GROUP
    assert groups.sender_refusal(PEERS[A], groups.Group("g", "", "", (B,))) == \
        groups.NOT_IN_GROUP
    big = groups.Group("g", "", "", (A, *(str(uuid.uuid4()) for _ in range(groups.MAX_GROUP))))
    assert groups.sender_refusal(PEERS[A], big) == groups.GROUP_TOO_LARGE


def test_recipients_are_the_other_members_that_take_messages():
    assert groups.recipients(A, "*", GROUP, PEERS) == ([B], "")
    assert groups.recipients(A, B, GROUP, PEERS) == ([B], "")
    assert groups.recipients(A, A, GROUP, PEERS) == ([], groups.NOT_A_MEMBER)
    assert groups.recipients(A, str(uuid.uuid4()), GROUP, PEERS) == ([], groups.NOT_A_MEMBER)
    assert groups.recipients(A, C, GROUP, PEERS) == ([], groups.PEER_NOT_ENABLED)
    assert groups.recipients(A, D, GROUP, PEERS) == ([], groups.PEER_GONE)


def test_group_status_names_every_member():
    status = groups.group_status(GROUP, PEERS, {B: "suspect"})
    assert status["group"] == "g" and status["name"] == "pair"
    assert status["members"][B] == {"status": "ACTIVE", "host": "c1", "monitor": "suspect",
                                    "messaging": True}
    assert status["members"][D]["status"] == "DELETED"


def outbox(*entries, epoch=EPOCH, v=1):
    return json.dumps({"v": v, "epoch": epoch, "messages": list(entries)}).encode()


def msg(seq, to="*", body="hi", app="db"):
    return {"seq": seq, "kind": "message", "to": to, "app": app, "body": body}


def test_entries_are_taken_once_per_epoch_and_at_most_max_taken_a_poll():
    parsed = gp.parse_outbox(outbox(*(msg(n) for n in range(1, 21))))
    assert [e["seq"] for e in groups.to_take(parsed, EPOCH, 0)] == list(range(1, 17))
    assert [e["seq"] for e in groups.to_take(parsed, EPOCH, 16)] == [17, 18, 19, 20]
    assert [e["seq"] for e in groups.to_take(parsed, "f" * 16, 16)][:1] == [1]  # guestd restarted
    assert groups.unacknowledged(parsed, EPOCH, 3)
    assert not groups.unacknowledged(parsed, "f" * 16, 3)
    assert not groups.unacknowledged(gp.parse_outbox(outbox(msg(4))), EPOCH, 3)


def results(n, members):
    return [gp.result(seq, gp.ACCEPTED, message=uuid.uuid4().hex,
                      members={m: groups.PENDING for m in members})
            for seq in range(1, n + 1)]


def fits_a_frame(details):
    req = groups.receipt_request(A, details, 5.0)
    assert protocol.parse_request(json.loads(protocol.encode(req))) == req
    assert gp.parse_receipt(details) == details
    protocol.spool_name(req["id"])


def test_a_poll_of_messages_to_a_full_group_fits_one_receipt():
    full = [str(uuid.uuid4()) for _ in range(groups.MAX_GROUP - 1)]
    details = groups.receipts(EPOCH, results(groups.MAX_TAKEN, full))
    assert len(details) == 1 and details[0]["acked"] == groups.MAX_TAKEN
    fits_a_frame(details[0])
    assert groups.receipts(EPOCH, [groups.refused(4, groups.RATE_LIMITED)]) == [
        {"epoch": EPOCH, "acked": 4,
         "results": [{"seq": 4, "status": "refused", "reason": "rate-limited"}]}]


def test_receipts_too_big_for_one_frame_are_split_each_acknowledging_its_last_seq():
    # Status answers for a full group on the longest host names Nova allows do not fit.
    group = groups.Group("g" * 36, "n" * 255, "anti-affinity",
                         tuple(str(uuid.uuid4()) for _ in range(groups.MAX_GROUP)))
    peers = {m: groups.Member(m, known=True, messaging=True, status="ACTIVE", host="h" * 255)
             for m in group.members}
    big = [gp.result(seq, gp.ACCEPTED, group=groups.group_status(group, peers, {}))
           for seq in range(1, groups.MAX_TAKEN + 1)]
    details = groups.receipts(EPOCH, big)
    assert len(details) > 1
    assert [r for d in details for r in d["results"]] == big
    for d in details:
        assert d["acked"] == d["results"][-1]["seq"]
        fits_a_frame(d)


def test_a_message_request_carries_the_stored_fields_and_the_decoded_body():
    mid = uuid.uuid4().hex
    fields = {"id": mid, "from": A, "group": "g", "to": "*", "epoch": EPOCH, "seq": "7",
              "body": "{}", "sent_at": "100.5", "expires": "160.5"}
    req = groups.message_request(B, fields, {"k": [1]}, 3.0)
    assert req["id"] == f"msg-{mid}" and req["phase"] == gp.MESSAGE
    assert req["details"] == {"id": mid, "from": A, "group": "g", "to": "*", "epoch": EPOCH,
                              "seq": 7, "sent_at": 100.5, "expires": 160.5, "body": {"k": [1]}}
    protocol.spool_name(req["id"])


def test_a_final_report_waits_while_anyone_is_pending():
    assert groups.final_report({"a": groups.DELIVERED, "b": groups.PENDING}) is None
    assert groups.final_report({"a": groups.DELIVERED, "b": groups.EXPIRED}) == {
        "a": groups.DELIVERED, "b": groups.EXPIRED}
