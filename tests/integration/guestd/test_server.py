"""guestd's socket: registration, guestd-ctl's relay and what a hostile peer cannot do
(guestd, its client library and guestd-ctl, as real processes)."""

import json
import subprocess
import time

import pytest

from guestd import protocol
from guestd.client import Vote
from harness.guestd_peers import app, ctl


def test_reregistering_replaces_the_old_connection(guest):
    app(guest, "db", vote=lambda n: Vote.reject("old"))
    app(guest, "db", vote=lambda n: Vote.reject("new"))
    _, answer = ctl(guest)
    assert [v["reason"] for v in answer["voters"]] == ["new"]


@pytest.mark.parametrize("relay", [True, False])
def test_ctl_without_guestd_is_not_negotiating(guest, short_dir, relay):
    code, answer = ctl(guest, socket=f"{short_dir}/nothing.sock", relay=relay)
    assert code == 0 and answer["result"] == "not-negotiating"
    assert answer["instance"] == guest.instance


@pytest.mark.parametrize("relay", [True, False])
def test_ctl_with_a_crashed_guestd_is_an_error_not_consent(guest, short_dir, relay):
    """A socket left behind with nobody listening: guestd crashed. Its applications cannot
    be asked, which the host must treat as unreachable, never as not-negotiating."""
    import socket as socket_module

    stale = f"{short_dir}/crashed.sock"
    left = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    left.bind(stale)
    left.close()  # bound, never listening: what a SIGKILLed guestd leaves
    code, answer = ctl(guest, socket=stale, relay=relay)
    assert code == 2 and answer["type"] == protocol.FAILURE
    assert "crashed" in answer["message"]


def test_ctl_parses_the_request_when_not_told_the_timeout(guest):
    app(guest, "db", vote=lambda n: Vote.reject("no"))
    code, answer = ctl(guest, relay=False)
    assert code == 0 and answer["result"] == "reject"


@pytest.mark.parametrize("argv, stdin, code", [
    ([], b"{not json", 2),  # parsed by guestd-ctl itself
    (["--timeout", "2"], b"{not json", 0),  # relayed: guestd answers with an error
    (["--timeout", "2"], b'{"type": "request"}', 0),
    (["--timeout", "soon"], b"{}", 2),
    (["--bogus"], b"{}", 2),
    (["--timeout", "2"], b"{}\n{}", 2),  # one document only
])
def test_ctl_garbage_gets_an_error_answer(guest, argv, stdin, code):
    done = subprocess.run(guest.guestd_ctl_argv + argv, input=stdin, capture_output=True,
                          env={"GUESTD_SOCKET": guest.guestd_socket}, timeout=5)
    assert done.returncode == code
    assert json.loads(done.stdout)["type"] == "error"
    assert guest.guestd.alive()


def test_hostile_application_cannot_crash_guestd(guest):
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(guest.guestd_socket)
        sock.sendall(b"garbage\n" + b"x" * 200_000 + b"\n" + protocol.encode(
            protocol.register("evil", ["*"])) + protocol.encode({"type": "ballot", "id": 1}))
        time.sleep(0.2)
    app(guest, "db", vote=lambda n: Vote.reject("still here"))
    _, answer = ctl(guest)
    assert answer["result"] == "reject" and guest.guestd.alive()
