import pytest

from guestd import hooks


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
