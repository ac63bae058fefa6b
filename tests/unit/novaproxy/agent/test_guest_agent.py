import base64
import time

import pytest

from novaproxy.agent import guest_agent, probe


def reply(data: bytes) -> dict:
    return {"count": len(data), "buf-b64": base64.b64encode(data).decode(), "eof": True}


def test_file_contents_are_the_decoded_bytes():
    assert guest_agent.file_contents(reply(b"seq 7\n"), 64, "/run/x") == b"seq 7\n"


@pytest.mark.parametrize("hostile, why", [
    ({"count": 0, "eof": True}, "no contents"),
    ("not a dict", "no contents"),
    ({"buf-b64": 5}, "no contents"),
    ({"buf-b64": "A" * 200}, "over 64 bytes"),  # refused before decoding
    (reply(b"x" * 65), "over 64 bytes"),
    ({"buf-b64": "!!not base64!!"}, "not base64"),
])
def test_hostile_file_replies_are_refused(hostile, why):
    with pytest.raises(guest_agent.GuestAgentError, match=why):
        guest_agent.file_contents(hostile, 64, "/run/x")


class OneFile:
    """qemu-ga's file RPCs over one file; ``handle``: what guest-file-open returns,
    ``failing``: the commands that get an error reply."""

    poll_cap = 0.005

    def __init__(self, data=b"", handle=3, failing=()):
        self.data, self.handle, self.failing = data, handle, set(failing)
        self.calls, self.written = [], b""

    def execute(self, command, arguments=None, timeout=5.0):
        self.calls.append(command)
        if command in self.failing:
            raise guest_agent.CommandFailed("GenericError", f"{command} failed")
        if command == "guest-file-open":
            return self.handle
        if command == "guest-file-read":
            return reply(self.data[:arguments["count"]])
        if command == "guest-file-write":
            self.written += base64.b64decode(arguments["buf-b64"])
            return {"count": 0, "eof": False}
        assert command == "guest-file-close"
        return {}


def deadline():
    return time.monotonic() + 5


@pytest.mark.parametrize("handle", [True, "3", None, 2.5, {"handle": 3}])
def test_a_guest_that_returns_no_handle_gets_no_further_call(handle):
    """Delivery and probing read through the same open: both check the handle."""
    qga = OneFile(b"x", handle=handle)
    with pytest.raises(guest_agent.GuestAgentError, match="no handle"):
        guest_agent.read_file(qga, "/run/x", 64, deadline())
    with pytest.raises(probe.StatusUnreadable, match="no handle"):
        probe.read_status(qga, "/run/x", 5)
    assert qga.calls == ["guest-file-open", "guest-file-open"]


def test_a_file_qemu_ga_cannot_open_is_told_apart():
    qga = OneFile(failing={"guest-file-open"})
    with pytest.raises(guest_agent.NotOpened):
        guest_agent.read_file(qga, "/run/x", 64, deadline())
    with pytest.raises(probe.StatusUnreadable, match="cannot open /run/x"):
        probe.read_status(qga, "/run/x", 5)


def test_a_read_closes_its_handle_whatever_happens():
    qga = OneFile(b"x", failing={"guest-file-read"})
    with pytest.raises(guest_agent.CommandFailed):
        guest_agent.read_file(qga, "/run/x", 64, deadline())
    assert qga.calls[-1] == "guest-file-close"
    # A failed close is not held against what was read.
    qga = OneFile(b"seq 7\n", failing={"guest-file-close"})
    assert guest_agent.read_file(qga, "/run/x", 64, deadline()) == b"seq 7\n"


def test_a_write_holds_only_once_closed():
    qga = OneFile()
    guest_agent.write_file(qga, "/run/x", b"frame", deadline())
    assert (qga.written, qga.calls[-1]) == (b"frame", "guest-file-close")
    # qemu-ga flushes on close: a failed close is a failed write.
    with pytest.raises(guest_agent.CommandFailed, match="close"):
        guest_agent.write_file(OneFile(failing={"guest-file-close"}), "/run/x", b"f", deadline())
    qga = OneFile(failing={"guest-file-write"})
    with pytest.raises(guest_agent.CommandFailed, match="write"):
        guest_agent.write_file(qga, "/run/x", b"frame", deadline())
    assert qga.calls[-1] == "guest-file-close"
