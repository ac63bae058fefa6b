"""A host request handed to applications and hook scripts, and guestd's answer
(guestd, its client library, hook scripts and guestd-ctl, as real processes)."""

import json
import subprocess
import time

import pytest

from guestd import protocol
from guestd.client import Offline, Vote
from harness.guestd_peers import app, ctl, spool, wait_answer


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


# vCPU scaling: applications and hooks name the vCPUs they offer to take offline.

SCALE_DOWN = {"online": [0, 1, 2, 3], "target": 2, "offline": [3, 2]}


def scale_down(guest, phase):
    """One phase of a scale-down through guestd-ctl: its answer, as the host reads it."""
    code, answer = ctl(guest, phase=phase, event="scale-down", details=SCALE_DOWN)
    assert code == 0, answer
    return protocol.parse_answer(answer, answer["id"], guest.instance)


def test_a_scale_down_prepare_carries_the_picks_of_applications_and_hooks(guest):
    seen = []

    def notice(n):
        seen.append((n.phase, n.online, n.target, n.offline))
        return Offline([1, 3])

    app(guest, "db", notice=notice, events=["scale-down"])
    app(guest, "web", notice=lambda n: None, events=["scale-down"])
    app(guest, "other", notice=lambda n: Offline([1]), events=["reboot"])
    guest.add_hook("50-pin", HOOK.format(body="""echo '{"offline":[2]}'"""))
    answer = scale_down(guest, "prepare")
    assert answer["result"] == "accept"
    assert sorted(answer["voters"], key=lambda v: v["name"]) == [
        protocol.voter("50-pin", "accept", "", (2,)), protocol.voter("db", "accept", "", (1, 3)),
        protocol.voter("web", "accept")]
    # Picks are a prepare's only: the same answers to an end name none.
    answer = scale_down(guest, "end")
    assert {v["name"]: v.get("offline") for v in answer["voters"]} == {
        "50-pin": None, "db": None, "web": None}
    assert seen == [("prepare", (0, 1, 2, 3), 2, (3, 2)), ("end", (0, 1, 2, 3), 2, (3, 2))]
