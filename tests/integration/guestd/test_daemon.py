"""guestd, its client library, hook scripts and guestd-ctl, as real processes."""

import json
import subprocess
import time

import pytest

from guestd import protocol
from guestd.client import Application, Vote


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
