"""guestd's socket: registration, guestd-ctl's relay and what a hostile peer cannot do
(guestd, its client library and guestd-ctl, as real processes)."""

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from guestd import protocol
from guestd.client import Offline, Vote
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


class RawApplication:
    """An application speaking the protocol itself, as a buggy or hostile one may."""

    def __init__(self, guest, name, events):
        import socket

        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(guest.guestd_socket)
        self.sock.settimeout(5)
        self.decoder = protocol.FrameDecoder()
        self.frames = []
        self.send(protocol.register(name, events))
        assert self.next()["type"] == protocol.REGISTERED

    def send(self, message):
        self.sock.sendall(protocol.encode(message))

    def next(self):
        while not self.frames:
            self.frames += self.decoder.feed(self.sock.recv(65536))
        return self.frames.pop(0)


def test_a_malformed_pick_gets_an_error_and_still_counts_as_done(guest):
    raw = RawApplication(guest, "raw", ["scale-down"])
    details = {"online": [0, 1, 2, 3], "target": 2, "offline": [3, 2]}
    with ThreadPoolExecutor(1) as pool:
        for phase in ("prepare", "end"):
            asked = pool.submit(ctl, guest, phase=phase, event="scale-down", timeout=30.0,
                                details=details)
            notice = raw.next()
            assert (notice["type"], notice["phase"]) == ("notice", phase)
            raw.send(protocol.done(notice["id"], (0, 2)))
            if phase == "prepare":
                failure = raw.next()
                assert failure["type"] == protocol.FAILURE
                assert failure["message"] == (
                    f"done for {notice['id']} counted without its offline list: 0 is not a "
                    "vCPU that can go offline (a whole number from 1 to 4095; CPU 0 stays)")
            code, answer = asked.result(timeout=10)  # long before its 30 s deadline
            assert code == 0 and answer["voters"] == [protocol.voter("raw", "accept")]
    # Outside a prepare the picks are not read: the next frame answers this, not the end.
    raw.send({"type": "bogus"})
    assert "unexpected 'bogus'" in raw.next()["message"]


def test_a_handlers_malformed_pick_is_left_out_and_the_prepare_answered(guest):
    app(guest, "db", notice=lambda n: Offline([3, 0]), events=["scale-down"])
    started = time.monotonic()
    code, answer = ctl(guest, phase="prepare", event="scale-down", timeout=30.0)
    assert time.monotonic() - started < 10  # answered, not waited for
    assert code == 0 and answer["voters"] == [protocol.voter("db", "accept")]
