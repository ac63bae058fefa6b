import json

from guestd import protocol
from guestd.status import SHORT_REASON, contents


def test_status_lists_unhealthy_first_so_that_the_cap_never_hides_them():
    entries = [protocol.app_health(f"ok{i:03}", True) for i in range(100)]
    entries.append(protocol.app_health("zz-broken", False, "down", "reboot"))
    status = protocol.parse_status(contents(5, 1.0, entries))
    assert len(status["apps"]) == protocol.MAX_APPS
    assert status["apps"][0] == protocol.app_health("zz-broken", False, "down", "reboot")
    assert [a["name"] for a in status["apps"][1:3]] == ["ok000", "ok001"]


def test_status_that_would_not_fit_one_frame_keeps_every_verdict():
    # 64 reasons of 512 escaped control characters (6 bytes each) are ~200 KB of JSON.
    entries = [protocol.app_health("\x01" * 64 + str(i), False, "\x01" * 5000, "stop")
               for i in range(protocol.MAX_APPS)]
    data = contents(1, 1.0, entries)
    assert len(data) < protocol.MAX_FRAME
    status = protocol.parse_status(data)
    assert len(status["apps"]) == protocol.MAX_APPS
    assert all(not a["healthy"] and a["action"] == "stop" for a in status["apps"])
    assert {len(a["reason"]) for a in status["apps"]} == {SHORT_REASON}


def test_lone_surrogates_from_an_application_cannot_break_the_status_file():
    name, reason = json.loads('["db\\udc80", "bad \\ud800 byte"]')  # valid JSON escapes
    entry = protocol.app_health(name, False, reason, "log")
    status = protocol.parse_status(contents(1, 1.0, [entry]))
    assert status["apps"][0]["name"] == "db?" and status["apps"][0]["reason"] == "bad ? byte"
