import json

import pytest

from guestd import protocol


def frames(*messages):
    return b"".join(protocol.encode(m) for m in messages)


def test_split_reads_yield_each_message_once():
    data = frames({"type": "a", "n": 1}, {"type": "b", "n": "ü" * 10})
    decoder = protocol.FrameDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert [m["type"] for m in out] == ["a", "b"]
    assert out[1]["n"] == "ü" * 10


def test_coalesced_reads_yield_all_messages():
    data = frames(*[{"type": "m", "n": i} for i in range(50)])
    assert [m["n"] for m in protocol.FrameDecoder().feed(data)] == list(range(50))


def test_garbage_frame_is_reported_and_the_next_frame_survives():
    decoder = protocol.FrameDecoder()
    out = decoder.feed(b"not json\n[1,2]\n" + frames({"type": "ok"}))
    assert isinstance(out[0], protocol.ProtocolError)
    assert isinstance(out[1], protocol.ProtocolError)  # JSON, but not an object
    assert out[2]["type"] == "ok"


def test_oversized_frame_is_dropped_once_without_buffering_it():
    decoder = protocol.FrameDecoder(max_frame=100)
    out = decoder.feed(b"x" * 80)
    out += decoder.feed(b"x" * 80)  # now over the limit, no newline yet
    out += decoder.feed(b"x" * 5000)
    assert len(decoder._buffer) <= 100
    out += decoder.feed(b"tail\n" + frames({"type": "after"}))
    errors = [m for m in out if isinstance(m, protocol.ProtocolError)]
    assert len(errors) == 1 and "exceeds" in str(errors[0])
    assert out[-1] == {"type": "after"}


def test_encode_refuses_what_a_peer_would_reject():
    with pytest.raises(protocol.ProtocolError):
        protocol.encode({"blob": "x" * protocol.MAX_FRAME})


def test_newer_peer_with_unknown_fields_is_understood():
    req = protocol.request("r1", "i1", "reboot", "vote", 5.0, {"type": "SOFT"})
    newer = {**req, "v": 7, "priority": "high", "phase": "pre-vote"}
    parsed = protocol.parse_request(protocol.decode(json.dumps(newer)))
    assert parsed["phase"] == "pre-vote"  # unknown phases pass on to applications
    assert "priority" not in parsed


@pytest.mark.parametrize("bad", [
    {"v": 0}, {"v": "1"}, {"v": True},
])
def test_bad_versions_are_refused(bad):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(json.dumps(bad))


@pytest.mark.parametrize("change", [
    {"type": "answer"}, {"id": ""}, {"id": 5}, {"timeout": 0}, {"timeout": "5"},
    {"timeout": 10_000}, {"silence": "maybe"}, {"details": []},
    {"details": {"x": "y" * protocol.MAX_DETAILS}},
])
def test_malformed_requests_are_refused(change):
    req = {**protocol.request("r1", "i1", "stop", "vote", 5.0), **change}
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_request(req)


def test_answer_must_match_request_and_instance():
    req = protocol.request("r1", "vm-a", "stop", "vote", 5.0)
    answer = protocol.answer(req, protocol.ACCEPT)
    assert protocol.parse_answer(answer, "r1", "vm-a")["result"] == "accept"
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_answer(answer, "r2", "vm-a")
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_answer(answer, "r1", "vm-b")  # never attributed to another VM


def test_answer_from_hostile_guest_is_capped_or_refused():
    req = protocol.request("r1", "vm-a", "stop", "vote", 5.0)
    long_reason = protocol.answer(req, protocol.REJECT,
                                  [protocol.voter("db", "reject", "r" * 5000)])
    parsed = protocol.parse_answer(long_reason, "r1", "vm-a")
    assert len(parsed["voters"][0]["reason"]) == protocol.MAX_REASON
    too_many = protocol.answer(req, protocol.ACCEPT,
                               [protocol.voter(f"a{i}", "accept") for i in range(100)])
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_answer(too_many, "r1", "vm-a")
    for bad_voters in ([{"name": "x", "vote": "maybe"}], ["x"], "x",
                       [{"name": 3, "vote": "accept"}]):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_answer({**long_reason, "voters": bad_voters}, "r1", "vm-a")
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_answer({**long_reason, "result": "yes"}, "r1", "vm-a")
