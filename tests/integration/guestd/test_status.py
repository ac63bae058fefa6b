"""Health reports, health hooks and the status file the host reads
(guestd, its client library and qemu-ga, as real processes)."""

import base64
import os
import socket
import stat
import time

import pytest

from guestd import protocol
from guestd.client import Application
from harness.guest import GUEST_PYTHON, REPO, STATUS_FILE
from harness.guestd_peers import app, log_count
from harness.processes import Process, wait_for
from novaproxy.agent.qga_socket import SocketGuestAgent

# guestd in the harness writes the status file every 0.2 s and runs health hooks
# every 0.5 s (deadline 0.5 s).


def read_status(guest):
    with open(guest.status_file, "rb") as f:
        return protocol.parse_status(f.read())


def wait_status(guest, check, timeout=5.0):
    """The first status file that satisfies ``check`` (polled until ``timeout``)."""

    def satisfied():
        status = read_status(guest)
        return status if check(status) else None

    return wait_for(satisfied, timeout, "the expected status file")


def health(status):
    return {a["name"]: (a["healthy"], a["reason"], a["action"]) for a in status["apps"]}


def test_application_health_reaches_the_status_file_until_it_disconnects(guest):
    first = read_status(guest)  # written before guestd accepts connections
    assert (first["interval"], first["apps"]) == (0.2, [])
    assert stat.S_IMODE(os.stat(guest.status_file).st_mode) == 0o644
    db = app(guest, "db")
    for _ in range(3):
        db.report_health(False, "replica lost its primary", action="reboot")
    status = wait_status(guest, lambda s: "db" in health(s))
    assert health(status) == {"db": (False, "replica lost its primary", "reboot")}
    wait_status(guest, lambda s: s["seq"] >= status["seq"] + 2)  # guestd is alive
    db.report_health(True)
    wait_status(guest, lambda s: health(s) == {"db": (True, "", "log")})
    # Transitions are logged, not every report.
    assert log_count(guest, "application db is unhealthy: replica lost its primary; "
                            "action requested: reboot") == 1
    assert log_count(guest, "application db is healthy") == 1
    db.report_health(False, "stuck")
    wait_status(guest, lambda s: health(s).get("db", (True,))[0] is False)
    db.stop()  # an application that exits is not reported
    wait_status(guest, lambda s: s["apps"] == [])


def test_status_file_is_read_by_the_host_through_qemu_ga(guest):
    app(guest, "db").report_health(False, "no quorum", action="stop")
    wait_status(guest, lambda s: "db" in health(s))
    agent = SocketGuestAgent(guest.qga_socket)
    try:
        handle = agent.execute("guest-file-open", {"path": STATUS_FILE, "mode": "r"}, 2)
        read = agent.execute("guest-file-read", {"handle": handle, "count": protocol.MAX_FRAME},
                             2)
        agent.execute("guest-file-close", {"handle": handle}, 2)
    finally:
        agent.close()
    status = protocol.parse_status(base64.b64decode(read["buf-b64"]))
    assert health(status) == {"db": (False, "no quorum", "stop")}


@pytest.mark.parametrize("body, expected", [
    ("echo starting; echo 'all good'", (True, "all good", "log")),
    ("echo 'db not answering'; exit 1", (False, "db not answering", "log")),
    ("""echo '{"reason": "disk full", "action": "reboot"}'; exit 2""",
     (False, "disk full", "reboot")),
    ("""echo '{"reason": "disk full", "action": "restart"}'; exit 1""",
     (False, "disk full (ignored: action must be one of log, reboot, stop)", "log")),
    # A megabyte of chatter: only the tail is kept, and its last line still counts.
    ("""head -c 1000000 /dev/zero | tr '\\0' x; echo; echo '{"action": "stop"}'; exit 1""",
     (False, "exit status 1", "stop")),
])
def test_health_hooks_report_by_exit_status_and_last_line(guest, body, expected):
    guest.add_health_hook("50-app", f"#!/bin/sh\n{body}\n")
    status = wait_status(guest, lambda s: "hook:50-app" in health(s))
    assert health(status) == {"hook:50-app": expected}


def test_hung_health_hook_is_killed_with_its_children_and_never_stalls_the_status(guest):
    hook = guest.add_health_hook("10-hang", '#!/bin/sh\nsleep 30 &\necho $! >> "$0.children"\n'
                                            'echo still checking\nwait\n')
    status = wait_status(guest, lambda s: "hook:10-hang" in health(s))
    assert health(status) == {"hook:10-hang": (False, "timed out after 0.5s", "log")}
    # The status beat went on while the hook hung: 0.5 s is 2-3 beats of 0.2 s.
    wait_status(guest, lambda s: s["seq"] >= status["seq"] + 3)
    os.unlink(hook)  # a hook that is removed leaves the status file
    wait_status(guest, lambda s: s["apps"] == [])
    with open(hook + ".children") as f:
        children = [int(line) for line in f]

    def gone(pid):  # a zombie until whoever inherited it reaps it
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    # Each run was killed at its deadline with its process group, children included.
    wait_for(lambda: all(gone(pid) for pid in children), 5, f"the hook's children {children}")


def test_bad_health_messages_get_an_error_and_the_connection_survives(guest):
    def receive(sock):
        return protocol.FrameDecoder().feed(sock.recv(65536))[0]

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(guest.guestd_socket)
        sock.sendall(protocol.encode(protocol.register("raw", ["*"])))
        assert receive(sock)["type"] == "registered"
        for bad in ({"type": "health", "healthy": "no"},
                    {"type": "health", "healthy": False, "action": "explode"}):
            sock.sendall(protocol.encode(bad))
            error = receive(sock)
            assert error["type"] == "error" and "must be" in error["message"]
        # A lone surrogate is valid JSON but not UTF-8: it must not break the status file.
        sock.sendall(b'{"type": "health", "healthy": false, "reason": "bad \\ud800 byte", '
                     b'"action": "stop"}\n')
        wait_status(guest, lambda s: health(s) == {"raw": (False, "bad ? byte", "stop")})
    wait_status(guest, lambda s: s["apps"] == [])
    assert guest.guestd.alive()


def test_client_reports_health_again_after_guestd_restarts(guest):
    db = app(guest, "db")
    db.report_health(False, "replica lost its primary", action="reboot")
    before = wait_status(guest, lambda s: "db" in health(s))
    guest.restart_guestd()
    # The restarted guestd carries on counting, and the client re-sends its report.
    # (The old guestd's file stays until the new one writes: wait for a newer count.)
    after = wait_status(guest, lambda s: s["seq"] > before["seq"] and "db" in health(s))
    assert after["seq"] > before["seq"]
    assert health(after) == {"db": (False, "replica lost its primary", "reboot")}
    assert db.registered.is_set()


def test_client_refuses_an_unknown_action():
    db = Application("db", socket_path="/nonexistent/guestd.sock")
    with pytest.raises(ValueError, match="action must be one of log, reboot, stop"):
        db.report_health(False, "down", action="restart")
    with pytest.raises(TypeError, match="reason must be a string"):
        db.report_health(False, None)
    db.report_health(False, "down", action="stop")  # kept until it can be sent


def test_status_write_failure_is_logged_once_and_guestd_carries_on(short_dir):
    blocker = f"{short_dir}/not-a-dir"
    open(blocker, "w").close()  # the status file's directory cannot be created
    guestd = Process([GUEST_PYTHON, "-m", "guestd.daemon", "--socket", f"{short_dir}/g.sock",
                      "--status-file", f"{blocker}/status.json", "--status-interval", "0.05",
                      "--health-dir", f"{short_dir}/none", "--spool-dir", f"{short_dir}/spool",
                      "--outbox", f"{short_dir}/outbox.json"],
                     f"{short_dir}/guestd.log",
                     {**os.environ, "PYTHONPATH": REPO})
    try:
        wait_for(lambda: "cannot write the status file" in guestd.log_tail(), 10, "an error")
        application = Application("db", socket_path=f"{short_dir}/g.sock").start()
        assert application.registered.wait(5)  # still serving
        time.sleep(0.5)  # ~10 more failed beats, which must not each be logged
        os.unlink(blocker)
        wait_for(lambda: os.path.exists(f"{blocker}/status.json"), 5, "the status file")
        wait_for(lambda: "written again after" in guestd.log_tail(), 5, "the recovery")
        log = guestd.log_tail(100)
        assert log.count("cannot write the status file") == 1
        failures = int(log.split("written again after ")[1].split()[0])
        assert failures >= 3
        assert guestd.alive()
        application.stop()
    finally:
        guestd.stop()
