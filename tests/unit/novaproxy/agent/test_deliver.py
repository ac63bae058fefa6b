import base64
import json
import time
import uuid

import pytest

from guestd import protocol
from novaproxy.agent import deliver, guest_agent

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


def old_guestd_answer(req, result, voters) -> dict:
    """An answer as guestd wrote it before voters_total: every voter listed."""
    answer = {**protocol.answer(req, result), "voters": voters}
    answer.pop("voters_total", None)
    return answer


CROWD = [protocol.voter(f"app{i:03}", "accept") for i in range(151)]
NACK = protocol.voter("db", "reject", "replication in progress")


def test_an_older_guestds_long_list_keeps_its_nack_and_its_result():
    """152 voters used to make the whole answer invalid: `unreachable = accept` let
    Nova reboot the server its guest had refused."""
    answer = old_guestd_answer(REQ, "reject", CROWD[:100] + [NACK] + CROWD[100:])
    reply = deliver.interpret(REQ, 0, out(answer), "c1")
    assert reply.outcome == "reject"
    assert len(reply.voters) == protocol.MAX_VOTERS and reply.voters[0] == NACK
    assert reply.detail == "64 of 152 voters listed"


def test_a_listed_rejection_outweighs_the_guests_accept():
    for result in ("accept", "not-negotiating"):
        answer = old_guestd_answer(REQ, result, CROWD[:100] + [NACK])
        reply = deliver.interpret(REQ, 0, out(answer), "c1")
        assert (reply.outcome, reply.voters[0]) == ("reject", NACK), result
        assert f"the guest answered {result} but lists a rejection" in reply.detail
    # As does an application that missed its deadline, when silence rejects.
    late = protocol.voter("slow", "timeout")
    answer = out(protocol.answer(REQ, "accept", [*CROWD[:10], late]))
    assert deliver.interpret({**REQ, "silence": "reject"}, 0, answer, "c1").outcome == "reject"
    assert deliver.interpret(REQ, 0, answer, "c1").outcome == "accept"


def test_a_rejection_without_a_listed_reason_stays_a_rejection():
    answer = {**protocol.answer(REQ, "reject", CROWD[:10]), "voters_total": 200}
    reply = deliver.interpret(REQ, 0, out(answer), "c1")
    assert (reply.outcome, len(reply.voters), reply.detail) == (
        "reject", 10, "10 of 200 voters listed")


def test_notices_are_not_counted_again():
    """A notice's answer is always accept (it is no vote); a ballot sent to it changes nothing."""
    prepare = {**REQ, "phase": "prepare", "silence": "reject"}
    answer = protocol.answer(prepare, "accept", [NACK, protocol.voter("slow", "timeout")])
    reply = deliver.interpret(prepare, 0, out(answer), "c1")
    assert (reply.outcome, reply.detail) == ("accept", "")


def test_the_largest_answer_guestd_writes_reaches_the_host_both_ways():
    """guestd fits every answer to one frame; nothing on the way in asks for less."""
    voters = [protocol.voter("😀" * 60 + f"{i:03}", "reject", "😀" * protocol.MAX_REASON)
              for i in range(150)]
    frame = protocol.encode(protocol.answer(REQ, "reject", voters))
    assert len(frame) > protocol.MAX_FRAME - 200
    through_exec = deliver.interpret(REQ, 0, frame, "c1")
    spool = spooled(FakeAgent(lambda req: protocol.encode(protocol.answer(req, "reject",
                                                                          voters))))
    for reply in (through_exec, spool):
        assert reply.outcome == "reject" and len(reply.voters) == protocol.MAX_VOTERS
        assert reply.detail == "64 of 150 voters listed"
        assert reply.voters[0]["reason"].startswith("😀😀")


def test_budget_keeps_room_for_the_way_back():
    assert deliver.budget(10.0, 1.0) == 10.0 - 1.0 - deliver.RETURN_MARGIN


class FakeAgent:
    """qemu-ga's file and exec RPCs over a dict of files; ``blocked``: disabled commands."""

    poll_cap = 0.005

    def __init__(self, answer=None, blocked=()):
        self.files, self.handles, self.calls = {}, {}, []
        self.answer, self.blocked = answer, set(blocked)

    def execute(self, command, arguments=None, timeout=5.0):
        self.calls.append(command)
        if command in self.blocked:
            raise guest_agent.CommandFailed("CommandNotFound", f"Command {command} has been "
                                                               "disabled")
        args = arguments or {}
        if command == "guest-file-open":
            path = args["path"]
            if not path.startswith("spool/"):
                raise guest_agent.CommandFailed("GenericError", "No such file or directory")
            if args["mode"] == "w":
                self.files[path] = b""
            elif path not in self.files:
                raise guest_agent.CommandFailed("GenericError", "No such file or directory")
            self.handles[len(self.handles) + 1] = path
            return len(self.handles)
        if command == "guest-file-write":
            self.files[self.handles[args["handle"]]] += base64.b64decode(args["buf-b64"])
            return {"count": 0, "eof": False}
        if command == "guest-file-close":
            path = self.handles[args["handle"]]
            if path.endswith(".req") and self.files[path] and self.answer is not None:
                # guestd takes the request and answers it.
                req = protocol.decode(self.files.pop(path))
                self.files[path[:-4] + ".ans"] = self.answer(req)
            return {}
        if command == "guest-file-read":
            data = self.files[self.handles[args["handle"]]][:args["count"]]
            return {"count": len(data), "buf-b64": base64.b64encode(data).decode(), "eof": True}
        if command == "guest-exec":
            return {"pid": 7}
        if command == "guest-exec-status":
            return {"exited": True, "exitcode": 0, "out-data": base64.b64encode(
                out(protocol.answer(REQ, "reject"))).decode()}
        raise AssertionError(command)


class Guests:
    def __init__(self, agent):
        self._agent = agent

    def agent(self, _instance):
        return self._agent


def deliverer(agent, spool_dir="spool"):
    return deliver.Deliverer(Guests(agent), guestd_ctl=("/usr/bin/guestd-ctl",), host="c1",
                             spool_dir=spool_dir)


def spooled(agent, req=REQ, through=None):
    """``req`` delivered to ``agent``'s guest, ``through`` a given Deliverer (its memory)."""
    return (through or deliverer(agent)).deliver(req, 2.0)


def test_the_spool_carries_the_request_and_its_answer():
    agent = FakeAgent(lambda req: protocol.encode(protocol.answer(req, "accept")))
    reply = spooled(agent)
    assert reply.outcome == "accept"
    assert "guest-exec" not in agent.calls
    # The answer file's handle is closed after the reply, in the background.
    deadline = time.monotonic() + 2
    while agent.calls.count("guest-file-close") < agent.calls.count("guest-file-open"):
        assert time.monotonic() < deadline, agent.calls
        time.sleep(0.01)


def test_a_blocked_file_write_falls_back_to_guest_exec():
    agent = FakeAgent(blocked={"guest-file-write"})
    req, through = {**REQ, "instance": "vm-blocked"}, deliverer(agent)
    assert spooled(agent, req, through).outcome == "invalid"  # guest-exec's, for REQ's instance
    assert agent.calls.count("guest-file-write") == 1 and "guest-exec" in agent.calls
    agent.calls.clear()
    spooled(agent, req, through)
    assert "guest-file-open" not in agent.calls  # remembered: straight to guest-exec


def test_a_garbage_answer_file_is_invalid_never_a_vote():
    for answer in (b"accept\n", b"x" * (protocol.MAX_FRAME + 5),
                   protocol.encode(protocol.answer({**REQ, "instance": "vm-b"}, "accept")),
                   protocol.encode(protocol.failure("boom"))):
        agent = FakeAgent(lambda req, answer=answer: answer)
        reply = spooled(agent, {**REQ, "id": uuid.uuid4().hex})
        assert reply.outcome == "invalid", answer[:40]
        assert "guest-exec" not in agent.calls


def test_request_ids_unfit_for_a_file_name_go_through_guest_exec():
    agent = FakeAgent()
    spooled(agent, {**REQ, "id": "../../etc/passwd"})
    assert "guest-file-open" not in agent.calls and "guest-exec" in agent.calls


def test_answer_polls_wait_for_what_the_guest_has_shown_it_needs():
    # Nothing known of the guest yet: look at once, at the shortest interval.
    assert deliver.answer_poll_wait(0.0, None) == deliver.SPOOL_POLL_MIN
    # A guest that never answered in under 50 ms is first looked at after 40 ms...
    assert deliver.answer_poll_wait(0.0, 0.05) == pytest.approx(0.04)
    assert deliver.answer_poll_wait(0.03, 0.05) == pytest.approx(0.01)
    # ...and a slow one is looked at early enough all the same.
    assert deliver.answer_poll_wait(0.0, 5.0) == deliver.SPOOL_FIRST_CAP


def test_answer_polls_thin_out_as_the_wait_grows():
    waited, polls = 0.0, []
    while waited < 10.0:
        wait = deliver.answer_poll_wait(waited, None)
        # An answer that came just after the last look is seen at most 1/8 late.
        assert wait <= max(waited / 8, deliver.SPOOL_POLL_MIN) + 1e-9
        polls.append(wait)
        waited += wait + 0.003  # the poll's own RPC
    assert polls == sorted(polls)  # never denser later
    assert len(polls) < 150 and max(polls) == deliver.SPOOL_POLL_CAP


def test_the_spool_learns_how_fast_a_guest_answers():
    instance = f"vm-{uuid.uuid4().hex[:8]}"
    agent = FakeAgent(lambda req: protocol.encode(protocol.answer(req, "accept")))
    through = deliverer(agent)
    started = time.monotonic()
    assert spooled(agent, {**REQ, "id": uuid.uuid4().hex, "instance": instance},
                   through).outcome == "accept"
    fastest = through.memory.fastest(instance)
    assert 0 < fastest < time.monotonic() - started
    # The next request to it is first looked for after 80 % of that.
    assert deliver.answer_poll_wait(0.0, fastest) == pytest.approx(0.8 * fastest)
