import json

from guestd import protocol
from novaproxy.agent import deliver

REQ = protocol.request("r1", "vm-a", "reboot", "vote", 5.0)


def out(message) -> bytes:
    return json.dumps(message).encode()


def test_valid_answer_becomes_the_reply():
    answer = protocol.answer(REQ, "reject", [protocol.voter("db", "reject", "busy")])
    reply = deliver.interpret(REQ, 0, out(answer), "c1")
    assert (reply.outcome, reply.voters[0]["reason"], reply.host) == ("reject", "busy", "c1")


def test_not_negotiating_is_passed_on():
    reply = deliver.interpret(REQ, 0, out(protocol.answer(REQ, "not-negotiating")), "c1")
    assert reply.outcome == "not-negotiating"


def test_hostile_output_is_invalid_never_a_vote():
    other_vm = protocol.answer({**REQ, "instance": "vm-b"}, "accept")
    other_req = protocol.answer({**REQ, "id": "r0"}, "reject")
    for stdout in (b"", b"\x00\xff", b"accept", out([1]), out(other_vm), out(other_req),
                   out({**protocol.answer(REQ, "accept"), "result": "maybe"}),
                   out(protocol.failure("guestd: boom"))):
        reply = deliver.interpret(REQ, 0, stdout, "c1")
        assert reply.outcome == "invalid", stdout
        assert (reply.id, reply.instance) == ("r1", "vm-a")


def test_budget_keeps_room_for_the_way_back():
    assert deliver.budget(10.0, 1.0) == 10.0 - 1.0 - deliver.RETURN_MARGIN
