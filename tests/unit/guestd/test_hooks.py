import pytest

from guestd import hooks, protocol


@pytest.mark.parametrize("returncode, stdout, expected", [
    (0, b"", (True, "", "log")),
    (0, b"3 workers up\n\n", (True, "3 workers up", "log")),
    (1, b"checking\n  db not answering  \n\n", (False, "db not answering", "log")),
    (1, b"", (False, "exit status 1", "log")),
    (3, b"\n", (False, "exit status 3", "log")),
    (-9, b"", (False, "killed by signal 9", "log")),
    (2, b'progress\n{"reason": "disk full", "action": "reboot"}\n', (False, "disk full", "reboot")),
    (1, b'{"action": "stop"}', (False, "exit status 1", "stop")),
    (0, b'{"reason": "degraded but serving", "action": "stop"}', (True, "degraded but serving",
                                                                  "stop")),
    # A JSON report whose action is not one the host knows: logged only, never acted on.
    (1, b'{"reason": "disk full", "action": "restart"}',
     (False, "disk full (ignored: action must be one of log, reboot, stop)", "log")),
    (1, b'{"reason": 5, "action": "reboot"}',
     (False, "exit status 1 (ignored: reason must be a non-empty string)", "log")),
    # Not a JSON object: the line itself is the reason.
    (1, b'{"reason": "cut', (False, '{"reason": "cut', "log")),
    (1, b'["reboot"]', (False, '["reboot"]', "log")),
    (1, b"caf\xc3\xa9 \xff closed", (False, "caf\u00e9 \ufffd closed", "log")),
])
def test_health_verdict(returncode, stdout, expected):
    assert hooks.verdict(returncode, stdout, 2.0) == expected


def test_a_timeout_is_unhealthy_whatever_was_printed():
    assert hooks.verdict(None, b'{"reason": "fine", "action": "reboot"}', 0.5) == (
        False, "timed out after 0.5s", "log")


@pytest.mark.parametrize("stdout, expected", [
    (b"", ()),
    (b"draining\n", ()),
    (b'draining\n{"offline": [3, 2]}\n\n', (3, 2)),
    (b'{"offline": [3]}\ndone\n', ()),  # only the last line counts
    (b'{"reason": "fine"}', ()),
    (b'[3, 2]', ()),
    (b'{"offline": [3', ()),
])
def test_what_a_prepare_hook_offers(stdout, expected):
    assert hooks.offered(stdout) == expected


@pytest.mark.parametrize("stdout", [b'{"offline": [0]}', b'{"offline": "3"}',
                                    b'{"offline": [3, 3]}'])
def test_a_malformed_offer_is_an_error(stdout):
    with pytest.raises(protocol.ProtocolError):
        hooks.offered(stdout)


def hook(tmp_path, body):
    path = tmp_path / "50-app"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def request(phase):
    return protocol.request("r1", "vm-a", "scale-down", phase, 5.0,
                            {"online": [0, 1, 2, 3], "target": 2, "offline": [3, 2]})


@pytest.mark.parametrize("phase, body, expected", [
    ("prepare", """echo '{"offline": [2, 1]}'""", protocol.voter("50-app", "accept", "", (2, 1))),
    # Only a prepare's picks are read, and only from a hook that exits 0.
    ("vote", """echo '{"offline": [2]}'""", protocol.voter("50-app", "accept")),
    ("end", """echo '{"offline": [2]}'""", protocol.voter("50-app", "accept")),
    ("prepare", """echo '{"offline": [2]}'; exit 3""",
     protocol.voter("50-app", "error", "exit status 3")),
    ("prepare", """echo '{"offline": [0, 2]}'""", protocol.voter(
        "50-app", "accept", "offline ignored: 0 is not a vCPU that can go offline "
        "(a whole number from 1 to 4095; CPU 0 stays)")),
])
def test_a_hooks_picks_become_its_voters(tmp_path, phase, body, expected):
    assert hooks.run(hook(tmp_path, body), request(phase), 5.0) == expected
