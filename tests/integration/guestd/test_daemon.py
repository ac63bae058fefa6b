"""guestd, its client library, hook scripts and guestd-ctl, as real processes."""

import json
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
import types

import pytest

from guestd import daemon, inotify, protocol
from guestd.client import Application, Vote
from guestd.spool import INCOMPLETE, POLL


def ctl(guest, phase="vote", event="reboot", timeout=2.0, silence="accept", socket=None,
        relay=True):
    """Run guestd-ctl as the agent does (``relay``: with --timeout) and parse its answer."""
    req = protocol.request(f"r{time.monotonic_ns()}", guest.instance, event, phase, timeout,
                           {"type": "SOFT"}, silence)
    argv = list(guest.guestd_ctl_argv)
    if socket is not None:
        argv += ["--socket", socket]
    if relay:
        argv += ["--timeout", str(timeout)]
    done = subprocess.run(argv, input=json.dumps(req).encode(), capture_output=True,
                          env={"GUESTD_SOCKET": guest.guestd_socket}, timeout=timeout + 5)
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def guest(make_guest, short_dir):
    from harness.guest import write_guestd_ctl

    guest = make_guest()
    guest.guestd_ctl_argv = write_guestd_ctl(f"{short_dir}/guestd-ctl")
    return guest


def app(guest, name, vote=None, notice=None, events=("*",)):
    application = Application(name, events, on_vote=vote, on_notice=notice,
                              socket_path=guest.guestd_socket).start()
    assert application.registered.wait(5)
    return application


def test_once_its_socket_answers_the_status_file_and_spool_are_there(make_guest):
    """Whoever waits for guestd's socket (the harness, the image's /init before it
    starts qemu-ga) may use the spool at once: guestd makes its socket last."""
    for _ in range(10):
        guest = make_guest()  # returns as soon as the socket accepts a connection
        assert os.path.isdir(guest.spool_dir) and os.path.isfile(guest.status_file)


def test_nobody_registered_means_accept(guest):
    code, answer = ctl(guest)
    assert code == 0 and answer["result"] == "accept" and answer["voters"] == []


def test_one_nack_rejects_with_every_answer_kept(guest):
    app(guest, "web", vote=lambda n: Vote.accept())
    app(guest, "db", vote=lambda n: Vote.reject("replication in progress"))
    _, answer = ctl(guest)
    assert answer["result"] == "reject"
    assert sorted((v["name"], v["vote"], v["reason"]) for v in answer["voters"]) == [
        ("db", "reject", "replication in progress"), ("web", "accept", "")]


def test_application_sees_event_details_and_only_its_events(guest):
    seen = []
    app(guest, "db", vote=lambda n: seen.append(n) or Vote.accept(), events=["reboot"])
    app(guest, "other", vote=lambda n: Vote.reject("not mine"), events=["stop"])
    _, answer = ctl(guest)
    assert answer["result"] == "accept"
    assert [(n.event, n.phase, n.details, n.instance) for n in seen] == [
        ("reboot", "vote", {"type": "SOFT"}, guest.instance)]


def test_late_application_counts_per_silence_policy(guest):
    app(guest, "slow", vote=lambda n: time.sleep(n.timeout + 1) or Vote.reject("too late"))
    started = time.monotonic()
    _, answer = ctl(guest, timeout=1.0, silence="accept")
    assert time.monotonic() - started < 2.0  # the deadline holds
    assert answer["result"] == "accept" and answer["voters"][0]["vote"] == "timeout"
    _, answer = ctl(guest, timeout=1.0, silence="reject")
    assert answer["result"] == "reject"


def test_notices_reach_applications(guest):
    seen = []
    app(guest, "db", notice=lambda n: seen.append((n.event, n.phase)))
    for phase in ("prepare", "abort", "end"):
        code, answer = ctl(guest, phase=phase)
        assert code == 0 and answer["phase"] == phase
    assert seen == [("reboot", "prepare"), ("reboot", "abort"), ("reboot", "end")]


def test_reregistering_replaces_the_old_connection(guest):
    app(guest, "db", vote=lambda n: Vote.reject("old"))
    app(guest, "db", vote=lambda n: Vote.reject("new"))
    _, answer = ctl(guest)
    assert [v["reason"] for v in answer["voters"]] == ["new"]


HOOK = """#!/bin/sh
cat > "$0.stdin"
echo "$1 $2" >> "$0.calls"
{body}
"""


@pytest.mark.parametrize("body, vote, reason", [
    ("exit 0", "accept", ""),
    ("echo 'backup running'; echo more; exit 1", "reject", "backup running"),
    ("exit 3", "error", "exit status 3"),
    ("sleep 30", "timeout", ""),
])
def test_hook_scripts_vote_by_exit_status(guest, body, vote, reason):
    path = guest.add_hook("50-app", HOOK.format(body=body))
    started = time.monotonic()
    _, answer = ctl(guest, timeout=1.0)
    assert time.monotonic() - started < 3.0
    assert answer["voters"] == [{"name": "50-app", "vote": vote, "reason": reason}]
    assert answer["result"] == ("reject" if vote == "reject" else "accept")
    notice = json.loads(open(path + ".stdin").read())
    assert (notice["event"], notice["phase"], notice["instance"]) == (
        "reboot", "vote", guest.instance)
    assert open(path + ".calls").read() == "reboot vote\n"


def test_hooks_get_every_phase_and_non_executables_are_ignored(guest):
    path = guest.add_hook("10-hook", HOOK.format(body="exit 1"))
    with open(f"{guest.hooks_dir}/README", "w") as f:
        f.write("not a hook")
    code, answer = ctl(guest, phase="prepare")
    assert code == 0 and answer["result"] == "accept"  # only a vote's exit status counts
    assert open(path + ".calls").read() == "reboot prepare\n"


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


def test_a_stopped_guestd_removes_its_socket(short_dir):
    path = f"{short_dir}/stopping.sock"
    server = daemon.Guestd(path, None)
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5) and os.path.exists(path)
    server.stop()
    thread.join(5)
    assert not os.path.exists(path)


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


# More voters than an answer lists (protocol.MAX_VOTERS), and reasons longer than one
# frame holds: neither may cost the host a NACK.


@pytest.fixture
def crowd(guest):
    """Start applications on ``guest``; stopped when the test ends."""
    apps = []

    def start(count, vote=None, prefix="app"):
        apps.extend(app(guest, f"{prefix}{i:03}", vote=vote) for i in range(count))

    yield start
    for application in apps:
        application.stop()


def both_ways(guest, timeout=5.0):
    """The answer to one vote through guestd-ctl, and to another through the spool."""
    code, relayed = ctl(guest, timeout=timeout)
    assert code == 0, relayed
    req = protocol.request(f"s{time.monotonic_ns()}", guest.instance, "reboot", "vote", timeout)
    spooled = wait_answer(spool(guest, req), timeout=timeout + 1)
    return [protocol.parse_answer(relayed, relayed["id"], guest.instance),
            protocol.parse_answer(spooled, req["id"], guest.instance)]


def test_one_nack_among_150_applications_rejects_with_its_reason(guest, crowd):
    crowd(149)
    crowd(1, vote=lambda n: Vote.reject("replication in progress"), prefix="db")
    for answer in both_ways(guest):
        assert answer["result"] == "reject"
        assert answer["voters"][0] == protocol.voter("db000", "reject", "replication in progress")
        assert (len(answer["voters"]), answer["voters_total"]) == (protocol.MAX_VOTERS, 150)
        assert {v["vote"] for v in answer["voters"][1:]} == {"accept"}


def test_150_long_multibyte_nacks_fit_one_frame(guest, crowd):
    crowd(150, vote=lambda n: Vote.reject("😀" * protocol.MAX_REASON))
    for answer in both_ways(guest):
        assert answer["result"] == "reject" and answer["voters_total"] == 150
        assert len(answer["voters"]) == protocol.MAX_VOTERS
        for entry in answer["voters"]:
            assert entry["vote"] == "reject" and entry["reason"].startswith("😀😀😀")
            assert entry["reason"].endswith(protocol.CUT)


# Health reports and the status file. guestd in the harness writes the status
# file every 0.2 s and runs health hooks every 0.5 s (deadline 0.5 s).


def read_status(guest):
    with open(guest.status_file, "rb") as f:
        return protocol.parse_status(f.read())


def wait_status(guest, check, timeout=5.0):
    """The first status file that satisfies ``check`` (polled until ``timeout``)."""
    from harness.processes import wait_for

    def satisfied():
        status = read_status(guest)
        return status if check(status) else None

    return wait_for(satisfied, timeout, "the expected status file")


def health(status):
    return {a["name"]: (a["healthy"], a["reason"], a["action"]) for a in status["apps"]}


def log_count(guest, text):
    with open(guest.guestd.log_path) as f:
        return f.read().count(text)


def test_application_health_reaches_the_status_file_until_it_disconnects(guest):
    import os
    import stat

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
    import base64

    from harness.guest import STATUS_FILE
    from novaproxy.agent.guest_agent import SocketGuestAgent

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
    import os

    from harness.processes import wait_for

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
    import socket

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
    import os

    from harness.guest import GUEST_PYTHON, REPO
    from harness.processes import Process, wait_for

    blocker = f"{short_dir}/not-a-dir"
    open(blocker, "w").close()  # the status file's directory cannot be created
    guestd = Process([GUEST_PYTHON, "-m", "guestd.daemon", "--socket", f"{short_dir}/g.sock",
                      "--status-file", f"{blocker}/status.json", "--status-interval", "0.05",
                      "--health-dir", f"{short_dir}/none", "--spool-dir", f"{short_dir}/spool"],
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


# --- the spool: requests as files, answered without any process started ---------------------


def spool(guest, req_or_bytes, rid=None):
    """Drop a request into guestd's spool as qemu-ga would (the file written, then closed)."""
    data = (req_or_bytes if isinstance(req_or_bytes, bytes)
            else protocol.encode(req_or_bytes))
    rid = rid or req_or_bytes["id"]
    with open(os.path.join(guest.spool_dir, rid + protocol.REQ_SUFFIX), "wb") as f:
        f.write(data)
    return os.path.join(guest.spool_dir, rid + protocol.ANS_SUFFIX)


def wait_answer(path, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.005)
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n") and data.count(b"\n") == 1  # one frame
    return protocol.decode(data)


def test_spooled_request_is_answered_like_a_relayed_one(guest):
    assert stat.S_IMODE(os.stat(guest.spool_dir).st_mode) == 0o700
    app(guest, "db", vote=lambda n: Vote.reject(f"busy with {n.event}"))
    req = protocol.request(f"s{time.monotonic_ns()}", guest.instance, "reboot", "vote", 2.0)
    started = time.monotonic()
    answer = protocol.parse_answer(wait_answer(spool(guest, req)), req["id"], guest.instance)
    assert time.monotonic() - started < 1.0
    assert answer["result"] == "reject"
    assert answer["voters"] == [protocol.voter("db", "reject", "busy with reboot")]
    assert not os.path.exists(os.path.join(guest.spool_dir, req["id"] + protocol.REQ_SUFFIX))
    assert log_count(guest, "watched with inotify") == 1
    # The same deadline as through guestd-ctl: a silent application times out.
    app(guest, "slow", vote=lambda n: time.sleep(n.timeout + 1) or Vote.accept())
    req = protocol.request(f"s{time.monotonic_ns()}", guest.instance, "reboot", "vote", 0.5,
                           silence="accept")
    answer = wait_answer(spool(guest, req), timeout=2.0)
    assert {v["name"]: v["vote"] for v in answer["voters"]} == {"db": "reject",
                                                                "slow": "timeout"}


def test_spool_garbage_is_dropped_and_guestd_carries_on(guest):
    names = {
        "bad name!": b"{}\n",
        "bad-json": b"not json\n",
        "not-a-request": protocol.encode({"type": "register", "name": "x"}),
        "other-id": protocol.encode(protocol.request("not-other-id", guest.instance, "reboot",
                                                     "vote", 1.0)),
        "oversize": b"x" * (protocol.MAX_FRAME + 10),
    }
    for name, data in names.items():
        spool(guest, data, name)
    os.mkfifo(os.path.join(guest.spool_dir, "fifo" + protocol.REQ_SUFFIX))
    os.symlink("/etc/hostname", os.path.join(guest.spool_dir, "link" + protocol.REQ_SUFFIX))
    # Undecodable requests with a usable name get an error answer, as guestd-ctl would.
    for name in ("bad-json", "not-a-request", "other-id"):
        answer = wait_answer(os.path.join(guest.spool_dir, name + protocol.ANS_SUFFIX))
        assert answer["type"] == protocol.FAILURE, answer
    deadline = time.monotonic() + 5
    while [n for n in os.listdir(guest.spool_dir) if n.endswith(protocol.REQ_SUFFIX)]:
        assert time.monotonic() < deadline, os.listdir(guest.spool_dir)
        time.sleep(0.02)
    assert not os.path.exists(os.path.join(guest.spool_dir, "bad name!" + protocol.ANS_SUFFIX))
    assert log_count(guest, "spool: dropped") >= 4
    # guestd still answers, through the spool and its socket.
    req = protocol.request(f"s{time.monotonic_ns()}", guest.instance, "reboot", "vote", 2.0)
    assert wait_answer(spool(guest, req))["result"] == "accept"
    assert ctl(guest)[1]["result"] == "accept"


def test_spool_removed_and_made_again_is_scanned_on_a_timer(guest):
    shutil.rmtree(guest.spool_dir)
    os.mkdir(guest.spool_dir, 0o700)
    req = protocol.request(f"s{time.monotonic_ns()}", guest.instance, "reboot", "vote", 2.0)
    assert wait_answer(spool(guest, req))["result"] == "accept"
    assert log_count(guest, "inotify watch on") == 1


def test_without_inotify_the_spool_is_scanned_on_a_timer(short_dir, monkeypatch, caplog):
    def unavailable(path):
        # Stands for a python3 without ctypes, or a kernel without inotify.
        raise inotify.Unavailable("no inotify: not here")

    monkeypatch.setattr(inotify, "DirectoryWatch", unavailable)
    caplog.set_level(logging.INFO, logger="guestd")
    guestd = daemon.Guestd(f"{short_dir}/g.sock", None, spool_dir=f"{short_dir}/spool")
    ready = threading.Event()
    threading.Thread(target=guestd.serve, args=(ready,), daemon=True).start()
    try:
        assert ready.wait(5)
        target = types.SimpleNamespace(spool_dir=guestd.spool.directory, instance="i-1")
        req = protocol.request(f"s{time.monotonic_ns()}", target.instance, "reboot", "vote", 2.0)
        assert wait_answer(spool(target, req))["result"] == "accept"
        assert f"scanned every {POLL:g}s (no inotify: not here)" in caplog.text
    finally:
        guestd.stop()


def test_incomplete_spool_request_waits_then_is_dropped(guest):
    req = protocol.request(f"s{time.monotonic_ns()}", guest.instance, "reboot", "vote", 2.0)
    frame = protocol.encode(req)
    path = os.path.join(guest.spool_dir, req["id"] + protocol.REQ_SUFFIX)
    with open(path, "wb") as f:
        f.write(frame[:10])
        f.flush()
        time.sleep(0.2)  # qemu-ga still writing: left alone
        assert os.path.exists(path)
        f.write(frame[10:])
    answer = wait_answer(os.path.join(guest.spool_dir, req["id"] + protocol.ANS_SUFFIX))
    assert answer["result"] == "accept"
    # One never completed goes after SPOOL_INCOMPLETE.
    with open(path, "wb") as f:
        f.write(frame[:10])
    deadline = time.monotonic() + INCOMPLETE + 3
    while os.path.exists(path):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert log_count(guest, "still incomplete") == 1


def test_a_request_delivered_twice_reaches_the_application_once(guest):
    """An agent restarted mid-prepare delivers the same request again: the application
    runs its prepare once, and both deliveries get its answer."""
    seen = []
    application = app(guest, "db", notice=lambda n: seen.append((n.event, n.phase)))
    try:
        req = protocol.request("twice", guest.instance, "reboot", "prepare", 3.0)
        answers = []
        for _ in range(2):
            done = subprocess.run(guest.guestd_ctl_argv, input=json.dumps(req).encode(),
                                  capture_output=True, timeout=10,
                                  env={"GUESTD_SOCKET": guest.guestd_socket})
            answers.append(json.loads(done.stdout))
        assert answers[0] == answers[1] and answers[0]["result"] == "accept"
        time.sleep(0.2)
        assert seen == [("reboot", "prepare")]
    finally:
        application.stop()
