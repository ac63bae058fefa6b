"""The guest agent client against real qemu-ga processes."""

import json
import signal
import time

import pytest

from guestd import protocol
from novaproxy.agent import guest_agent
from novaproxy.agent.guest_agent import guest_exec
from novaproxy.agent.qga_socket import SocketGuestAgent


@pytest.fixture
def guest(make_guest):
    return make_guest()


def test_ping_and_exec(guest):
    agent = SocketGuestAgent(guest.qga_socket)
    assert agent.execute("guest-ping", timeout=2) == {}
    code, out = guest_exec(agent, ["/bin/sh", "-c", "cat; echo; exit 3"], b"hello", 5)
    assert (code, out) == (3, b"hello\n")
    agent.close()
    time.sleep(0.2)
    assert guest.qemu_ga.restarts == 0  # drained before close: qemu-ga kept running


def test_guestd_ctl_through_qemu_ga(guest, short_dir):
    from harness.guest import write_guestd_ctl

    argv = write_guestd_ctl(f"{short_dir}/guestd-ctl")
    req = protocol.request("r1", guest.instance, "stop", "vote", 2.0)
    code, out = guest_exec(SocketGuestAgent(guest.qga_socket), argv,
                           json.dumps(req).encode(), 5)
    answer = protocol.parse_answer(json.loads(out), "r1", guest.instance)
    assert code == 0 and answer["result"] == "accept"


def test_missing_program_is_reported_by_class(guest):
    with pytest.raises(guest_agent.CommandFailed, match="Failed to execute"):
        guest_exec(SocketGuestAgent(guest.qga_socket), ["/nonexistent/guestd-ctl"], b"", 5)


def test_an_error_reply_keeps_the_connection_in_sync(guest):
    """An error reply ends its exchange cleanly: no drain, reconnect or resync (which
    cost ~50 ms on every missing-file poll of the spool)."""
    agent = SocketGuestAgent(guest.qga_socket)
    assert agent.execute("guest-ping", timeout=2) == {}
    connection = agent._sock
    with pytest.raises(guest_agent.CommandFailed, match="No such file"):
        agent.execute("guest-file-open", {"path": "/nonexistent/x.ans", "mode": "r"}, 2)
    assert agent._sock is connection and agent._synced
    assert agent.execute("guest-ping", timeout=2) == {}
    assert guest.qemu_ga.restarts == 0


def test_timeout_then_resync_discards_the_late_reply(guest):
    agent = SocketGuestAgent(guest.qga_socket)
    assert agent.execute("guest-ping", timeout=2) == {}
    guest.qemu_ga.signal(signal.SIGSTOP)  # a hung guest agent
    try:
        started = time.monotonic()
        with pytest.raises(guest_agent.GuestAgentTimeout):
            agent.execute("guest-info", timeout=0.3)
        assert time.monotonic() - started < 0.5  # the deadline holds
    finally:
        guest.qemu_ga.signal(signal.SIGCONT)
    # The late guest-info reply is still in flight: the next call must not take it.
    assert agent.execute("guest-ping", timeout=2) == {}
    code, out = guest_exec(agent, ["/bin/echo", "ok"], b"", 5)
    assert (code, out) == (0, b"ok\n")


def test_exec_deadline_holds_for_a_slow_program(guest):
    agent = SocketGuestAgent(guest.qga_socket)
    started = time.monotonic()
    with pytest.raises(guest_agent.GuestAgentTimeout):
        guest_exec(agent, ["/bin/sleep", "5"], b"", 0.5)
    assert time.monotonic() - started < 1.0


def test_oversized_program_output_is_refused(guest):
    agent = SocketGuestAgent(guest.qga_socket)
    with pytest.raises(guest_agent.GuestAgentError, match="larger than"):
        guest_exec(agent, ["/bin/sh", "-c", "head -c 200000 /dev/zero"], b"", 5)
    assert agent.execute("guest-ping", timeout=2) == {}  # and the channel still works


def test_no_socket_is_unavailable(short_dir):
    with pytest.raises(guest_agent.GuestAgentUnavailable):
        SocketGuestAgent(f"{short_dir}/none.sock").execute("guest-ping", timeout=1)


def test_a_call_waiting_for_a_hung_one_keeps_its_own_deadline(guest):
    import threading

    agent = SocketGuestAgent(guest.qga_socket)
    agent.execute("guest-ping", timeout=2)
    guest.qemu_ga.signal(signal.SIGSTOP)
    try:
        first = threading.Thread(target=lambda: pytest.raises(
            guest_agent.GuestAgentTimeout, agent.execute, "guest-ping", None, 2.0))
        first.start()
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(guest_agent.GuestAgentTimeout):
            agent.execute("guest-ping", timeout=0.3)
        assert time.monotonic() - started < 0.5
        first.join(5)
    finally:
        guest.qemu_ga.signal(signal.SIGCONT)
