import json

import pytest

from guestd import protocol


def test_newer_peer_with_unknown_fields_is_understood():
    req = protocol.request("r1", "i1", "reboot", "vote", 5.0, {"type": "SOFT"})
    newer = {**req, "v": 7, "priority": "high", "phase": "pre-vote"}
    parsed = protocol.parse_request(protocol.decode(json.dumps(newer)))
    assert parsed["phase"] == "pre-vote"  # unknown phases pass on to applications
    assert "priority" not in parsed


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
    for bad_voters in ([{"name": "x", "vote": "maybe"}], ["x"], "x",
                       [{"name": 3, "vote": "accept"}]):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_answer({**long_reason, "voters": bad_voters}, "r1", "vm-a")
    for bad_total in ("1", True, None, -1, 0, 1.5):  # long_reason lists one voter
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_answer({**long_reason, "voters_total": bad_total}, "r1", "vm-a")
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_answer({**long_reason, "result": "yes"}, "r1", "vm-a")


REQ = protocol.request("r1", "vm-a", "stop", "vote", 5.0)


def test_an_answer_lists_max_voters_and_counts_them_all():
    voters = [protocol.voter(f"app{i}", "accept") for i in range(150)]
    answer = protocol.parse_answer(protocol.decode(protocol.encode(
        protocol.answer(REQ, protocol.REJECT, voters))), "r1", "vm-a")
    assert answer["voters"] == voters[:protocol.MAX_VOTERS]  # in the order given
    assert (answer["result"], answer["voters_total"]) == ("reject", 150)


def test_an_older_guestds_long_list_is_read_whole_never_refused():
    """Before voters_total, guestd listed every voter: refusing the answer for it turned
    a NACK into whatever the host does with a guest it cannot ask."""
    old = {**protocol.answer(REQ, protocol.REJECT), "voters": [
        protocol.voter(f"app{i}", "reject" if i == 100 else "accept") for i in range(152)]}
    old.pop("voters_total", None)
    answer = protocol.parse_answer(protocol.decode(protocol.encode(old)), "r1", "vm-a")
    assert (answer["result"], answer["voters_total"], len(answer["voters"])) == (
        "reject", 152, 152)
    assert answer["voters"][100] == protocol.voter("app100", "reject")


def frame_of(voters) -> bytes:
    """The frame guestd sends for a vote with these voters (rejections first)."""
    return protocol.encode(protocol.answer(REQ, protocol.REJECT, voters))


def test_max_voters_with_full_ascii_reasons_fit_untouched():
    voters = [protocol.voter("n" * protocol.MAX_NAME, "reject", "r" * protocol.MAX_REASON)
              for _ in range(protocol.MAX_VOTERS)]
    answer = protocol.decode(frame_of(voters))
    assert answer["voters"] == voters


# Full reasons of characters of 2, 3 and 4 bytes, and of control characters JSON escapes in 6.
@pytest.mark.parametrize("char", ["é", "€", "😀", "\x01"])
def test_max_voters_with_full_multibyte_reasons_are_cut_to_fit_one_frame(char):
    voters = [protocol.voter(f"{char * 60}{i:03}", "reject", f"{i:03}" + char * 600)
              for i in range(protocol.MAX_VOTERS)]
    frame = frame_of(voters)  # encode refuses anything over MAX_FRAME
    assert protocol.MAX_FRAME * 0.9 < len(frame) <= protocol.MAX_FRAME  # cut no more than needed
    answer = protocol.parse_answer(protocol.decode(frame), "r1", "vm-a")
    assert answer["result"] == "reject" and answer["voters_total"] == protocol.MAX_VOTERS
    assert [(v["name"], v["vote"]) for v in answer["voters"]] == [
        (v["name"], v["vote"]) for v in voters]
    kept = {len(v["reason"]) for v in answer["voters"]}
    assert len(kept) == 1 and 3 < kept.pop() < protocol.MAX_REASON  # all cut alike
    for i, entry in enumerate(answer["voters"]):
        assert entry["reason"].startswith(f"{i:03}{char}") and entry["reason"].endswith(
            protocol.CUT)


def test_only_reasons_longer_than_the_cut_are_cut():
    short = protocol.voter("db", "reject", "replication in progress")
    long = [protocol.voter(f"app{i}", "accept", "€" * protocol.MAX_REASON) for i in range(63)]
    answer = protocol.decode(frame_of([short, *long]))
    assert answer["voters"][0] == short
    assert all(v["reason"].endswith(protocol.CUT) for v in answer["voters"][1:])


def test_fit_answer_leaves_an_answer_that_fits_as_it_is():
    answer = {**protocol.answer(REQ, protocol.REJECT), "voters": [
        protocol.voter("db", "reject", "€" * protocol.MAX_REASON)]}
    assert protocol.fit_answer(answer) is answer


def test_health_round_trip():
    report = protocol.decode(protocol.encode(protocol.health(False, "no primary", "reboot")))
    assert report["type"] == "health"
    assert protocol.parse_health(report) == (False, "no primary", "reboot")
    assert protocol.parse_health({"type": "health", "healthy": True}) == (True, "", "log")
    assert len(protocol.parse_health(protocol.health(False, "r" * 5000))[1]) == protocol.MAX_REASON


@pytest.mark.parametrize("bad", [
    {"healthy": "false"}, {"healthy": 0}, {}, {"healthy": False, "action": "restart"},
    {"healthy": False, "action": 1}, {"healthy": False, "reason": 5},
])
def test_malformed_health_reports_are_refused(bad):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_health({"v": 1, "type": "health", **bad})


def status_file(**changes):
    """A status file as a guest could write it: a good one, with ``changes``."""
    message = protocol.status(7, 1.0, [protocol.app_health("db", False, "down", "stop"),
                                       protocol.app_health("hook:web", True)])
    return json.dumps({**message, **changes}).encode()


def test_status_round_trip():
    data = protocol.encode(protocol.status(
        3, 0.2, [protocol.app_health("db", False, "no primary", "reboot")]))
    assert protocol.parse_status(data) == {
        "v": 1, "type": "status", "seq": 3, "interval": 0.2,
        "apps": [{"name": "db", "healthy": False, "reason": "no primary", "action": "reboot"}]}
    parsed = protocol.parse_status(status_file(interval=1))
    assert parsed["interval"] == 1.0 and isinstance(parsed["interval"], float)
    assert [a["name"] for a in parsed["apps"]] == ["db", "hook:web"]


def test_status_from_a_newer_guestd_is_understood():
    newer = json.loads(status_file())
    newer.update(v=3, messages=[{"to": "peer"}])
    newer["apps"][0]["since"] = 12
    parsed = protocol.parse_status(json.dumps(newer).encode())
    assert "messages" not in parsed and "since" not in parsed["apps"][0]
    assert parsed["apps"][0]["action"] == "stop"


def test_status_caps_names_and_reasons():
    parsed = protocol.parse_status(status_file(apps=[
        {"name": "n" * 500, "healthy": False, "reason": "r" * 5000, "action": "stop"}]))
    assert len(parsed["apps"][0]["name"]) == protocol.MAX_NAME
    assert len(parsed["apps"][0]["reason"]) == protocol.MAX_REASON


@pytest.mark.parametrize("data", [
    b"",
    b"not json",
    b"[1, 2]",
    b'"status"',
    b"\xff\xfe",
    status_file() + b" " * protocol.MAX_FRAME,  # oversized, however valid
    status_file(type="answer"),
    status_file(v=0),
    status_file(seq=True),  # bool is an int in Python, never a counter
    status_file(seq=-1),
    status_file(seq=1.5),
    status_file(seq="7"),
    status_file(seq=None),
    status_file(interval=0),
    status_file(interval=False),
    status_file(interval="1"),
    status_file(interval=1e9),
    status_file(apps={"db": {}}),
    status_file(apps=["db"]),
    status_file(apps=[None]),
    status_file(apps=[protocol.app_health("db", True)] * (protocol.MAX_APPS + 1)),
    status_file(apps=[{"name": "db", "healthy": "no", "reason": "", "action": "log"}]),
    status_file(apps=[{"name": "db", "healthy": 0, "reason": "", "action": "log"}]),
    status_file(apps=[{"name": "db", "healthy": False, "reason": "", "action": "reset"}]),
    status_file(apps=[{"name": "db", "healthy": False, "reason": ["x"], "action": "stop"}]),
    status_file(apps=[{"name": "", "healthy": False, "reason": "", "action": "stop"}]),
    status_file(apps=[{"name": 5, "healthy": False, "reason": "", "action": "stop"}]),
    status_file(apps=[{"healthy": False, "reason": "", "action": "stop"}]),
])
def test_hostile_status_files_are_refused(data):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_status(data)


def test_a_lone_surrogate_cannot_break_a_message():
    # Valid JSON (an escape), invalid UTF-8: a hostile peer's reason is kept, mangled.
    ballot = protocol.decode(b'{"type": "ballot", "id": "n", "vote": "reject", '
                             b'"reason": "bad \\ud800 byte"}')
    frame = protocol.encode(protocol.ballot(*protocol.parse_ballot(ballot)))
    assert protocol.decode(frame)["reason"] == "bad ? byte"


@pytest.mark.parametrize("rid", ["a", "0f3c-9_x", "x" * 64])
def test_spool_names(rid):
    assert protocol.spool_name(rid) == rid


@pytest.mark.parametrize("rid", ["", "x" * 65, "../x", "a/b", "a.req", "é", "a b", None, 7])
def test_unsafe_spool_names_are_refused(rid):
    with pytest.raises(protocol.ProtocolError):
        protocol.spool_name(rid)


# vCPU scaling: the vCPUs an application offers to take offline in a prepare.


def test_a_voter_or_done_without_picks_is_as_it_always_was():
    assert protocol.voter("db", "accept", "", ()) == {"name": "db", "vote": "accept",
                                                      "reason": ""}
    assert protocol.encode(protocol.done("n1")) == b'{"v":1,"type":"done","id":"n1"}\n'


def test_picks_travel_in_a_done_and_in_an_answer():
    assert protocol.parse_done(protocol.decode(protocol.encode(
        protocol.done("n1", (3, 1))))) == ("n1", (3, 1))
    assert protocol.parse_done({"type": "done", "id": "n1"}) == ("n1", ())
    picks = [protocol.voter("db", "accept", "", (3, 1)),
             protocol.voter("hook", "accept", "", tuple(range(4095, 4079, -1)))]
    req = protocol.request("r1", "vm-a", "scale-down", "prepare", 5.0)
    answer = protocol.parse_answer(protocol.decode(protocol.encode(
        protocol.answer(req, protocol.ACCEPT, picks))), "r1", "vm-a")
    assert [v["offline"] for v in answer["voters"]] == [[3, 1], list(range(4095, 4079, -1))]


BAD_PICKS = [
    "3", 3, None, {"3": 1}, (3,),  # not a list
    list(range(1, protocol.MAX_OFFERED + 2)),  # too many
    [0], [-1], [protocol.MAX_CPU], [10**12],  # CPU 0, out of range
    [True], [1.0], ["1"], [None], [[1]],  # not whole numbers
    [2, 3, 2],  # twice
]


@pytest.mark.parametrize("picks", BAD_PICKS)
def test_an_answer_with_malformed_picks_is_refused(picks):
    req = protocol.request("r1", "vm-a", "scale-down", "prepare", 5.0)
    answer = protocol.answer(req, protocol.ACCEPT, [protocol.voter("db", "accept")])
    answer["voters"][0]["offline"] = picks
    with pytest.raises(protocol.ProtocolError, match="offline|vCPU"):
        protocol.parse_answer(answer, "r1", "vm-a")


@pytest.mark.parametrize("picks", BAD_PICKS)
def test_a_done_with_malformed_picks_is_refused(picks):
    with pytest.raises(protocol.ProtocolError, match="offline|vCPU"):
        protocol.parse_done({"type": "done", "id": "n1", "offline": picks})


def test_max_voters_with_full_picks_and_the_longest_names_and_reasons_fit_one_frame():
    """The worst answer: picks and names are never cut, so reasons make room for them."""
    picks = tuple(range(protocol.MAX_CPU - 1, protocol.MAX_CPU - 1 - protocol.MAX_OFFERED, -1))
    voters = [protocol.voter("\x01" * protocol.MAX_NAME, "reject", "😀" * protocol.MAX_REASON,
                             picks) for _ in range(protocol.MAX_VOTERS)]
    answer = protocol.parse_answer(protocol.decode(frame_of(voters)), "r1", "vm-a")
    assert [(v["name"], v["offline"]) for v in answer["voters"]] == [
        ("\x01" * protocol.MAX_NAME, list(picks))] * protocol.MAX_VOTERS
    assert all(v["reason"].endswith(protocol.CUT) for v in answer["voters"])
