"""The operator CLI against a real redis-server."""

import re
import subprocess
import sys

from novaproxy import audit, cli, redis_schema


def run(redis_server, *args):
    return subprocess.run([sys.executable, "-m", "novaproxy.cli", "--redis-url",
                           redis_server.url, *args], capture_output=True, text=True, timeout=30)


def test_status_lists_routes_by_host_and_locks(redis_client, redis_server):
    redis_schema.publish_routes(redis_client, "compute1", ["u-1", "u-2"])
    redis_schema.publish_routes(redis_client, "compute2", ["u-3"])
    redis_schema.acquire_lock(redis_client, "u-2", "me", 30)
    out = run(redis_server, "status").stdout
    assert "compute1: 2 instance(s)\n  u-1\n  u-2\ncompute2: 1 instance(s)\n  u-3" in out
    assert "negotiations in flight: 1\n  u-2 (lock expires in" in out


def test_status_shows_operations_nova_is_carrying_out(redis_client, redis_server):
    import time

    now = time.time()
    redis_schema.publish_routes(redis_client, "compute1", ["u-1"])
    redis_schema.record_operation(redis_client, "u-1", {
        "id": "a", "event": "migrate", "action": "migrate", "prepared": True,
        "state": "forwarded", "nova_request": "req-1", "created": now - 5,
        "expires": now + 100}, 100)
    redis_schema.record_operation(redis_client, "u-9", {
        "id": "b", "event": "unshelve", "action": "unshelve", "created": now,
        "expires": now + 100}, 100)
    out = run(redis_server, "status").stdout
    # The CLI starts in about a second, more on a loaded machine: 5 s ago, or a few more.
    assert re.search(r"  u-1\n    operation migrate \(migrate\) a: accepted by Nova, [5-9]s ago, "
                     r"Nova request req-1; guest prepared, closing notice pending for [5-9]s; "
                     r"record expires in ", out), out
    assert "operations of instances no agent serves: 1\n  u-9 unshelve (unshelve) b" in out


def test_operations_lists_open_prepares_oldest_first_and_can_alarm(redis_client,
                                                                   redis_server):
    import time

    now = time.time()
    redis_schema.record_operation(redis_client, "u-2", {
        "id": "new", "event": "reboot", "action": "reboot", "prepared": True,
        "state": "unknown", "why": "Nova answered HTTP 502", "decide_by": now + 50,
        "created": now - 20, "expires": now + 100}, 100)
    redis_schema.record_operation(redis_client, "u-1", {
        "id": "old", "event": "stop", "action": "os-stop", "prepared": True,
        "state": "preparing", "created": now - 300, "expires": now + 100}, 100)
    redis_schema.record_operation(redis_client, "u-3", {
        "id": "plain", "event": "start", "action": "os-start", "state": "forwarded",
        "created": now - 1, "expires": now + 100}, 100)
    done = run(redis_server, "operations")
    lines = done.stdout.splitlines()
    assert done.returncode == 0
    assert re.match(r"operations not closed: 3; open prepares: 2 \(oldest 30\ds\)", lines[0])
    assert lines[1].startswith("  u-1 stop (os-stop) old: being negotiated, 30")
    assert "u-2 reboot (reboot) new: Nova's answer unknown, 2" in lines[2]
    assert re.search(r"\(Nova answered HTTP 502\); decided from Nova's instance actions "
                     r"within (4\d|50)s", lines[2]), lines[2]
    assert "u-3 start (os-start) plain: accepted by Nova" in lines[3]
    assert "closing notice pending" not in lines[3]
    alarm = run(redis_server, "operations", "--open-longer-than", "120")
    assert alarm.returncode == 1
    assert "a prepare has been open for 30" in alarm.stderr
    assert run(redis_server, "operations", "--open-longer-than", "3600").returncode == 0


def test_events_newest_last_and_negotiations_only(redis_client, redis_server):
    redis_schema.audit(redis_client, audit.NEGOTIATION, "u-1", event="reboot", outcome="reject",
                       why="the guest rejected", took_ms=42,
                       voters=[{"name": "db", "vote": "reject", "reason": "busy"}])
    redis_schema.audit(redis_client, audit.GUEST_ANSWER, "u-1", event="stop", phase="vote",
                       outcome="accept", host="compute1", voters=[])
    lines = run(redis_server, "events").stdout.splitlines()
    assert "reboot: reject in 42 ms — the guest rejected [db=reject (busy)]" in lines[0]
    assert "stop vote on compute1: accept" in lines[1]
    only = run(redis_server, "negotiations").stdout.splitlines()
    assert len(only) == 1 and "negotiation" in only[0]


def test_unreachable_redis_is_a_clear_error_without_the_password():
    done = subprocess.run([sys.executable, "-m", "novaproxy.cli", "--redis-url",
                           "redis://:hunter2@127.0.0.1:1/0", "status"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "Redis at redis://:***@127.0.0.1:1/0" in done.stderr
    assert "hunter2" not in done.stderr


def test_failures_show_their_evidence():
    line = cli.format_event({"kind": audit.FAILURE, "instance": "u-1", "time": "0", "event": "hung",
                             "outcome": "failed", "why": "3 consecutive guest-pings unanswered",
                             "evidence": '{"missed_pings": 3, "last_answer_ago": 4.0}'})
    assert line.endswith("hung: failed — 3 consecutive guest-pings unanswered "
                         "{missed_pings=3, last_answer_ago=4.0}")


def test_monitor_states_are_said_once():
    line = cli.format_event({"kind": audit.MONITOR, "instance": "u-1", "time": "0",
                             "event": "quiet", "outcome": "quiet",
                             "why": "Nova is busy with it (powering-off)"})
    assert line.endswith("u-1  quiet — Nova is busy with it (powering-off)")


def test_format_tolerates_odd_events():
    assert "?" in cli.format_event({"time": "x"})


def test_status_shows_each_monitored_vm_and_its_last_answer(redis_client, redis_server):
    import time

    now = time.time()
    redis_schema.publish_routes(redis_client, "compute1", ["u-1", "u-2"])
    redis_schema.publish_monitor(redis_client, {
        "u-1": {"state": "healthy", "since": now - 60, "last_answer": now - 0.4},
        "u-2": {"state": "quiet", "since": now - 3, "last_answer": "",
                "quiet": "stop in flight (recorded by the proxy)"}}, 30)
    out = run(redis_server, "status").stdout
    # The CLI reads its clock while it runs, which takes a while on a busy machine.
    late = time.time() - now + 0.05

    def ago(pattern: str) -> float:
        found = re.search(pattern, out)
        assert found, out
        return float(found.group(1))

    since = ago(r"  u-1\n    monitor: healthy since ([\d.]+)s ago, last answer [\d.]+s ago\n")
    answered = ago(r"  u-1\n    monitor: healthy since [\d.]+s ago, last answer ([\d.]+)s ago\n")
    assert 60 - 0.05 <= since <= 60 + late and 0.4 - 0.05 <= answered <= 0.4 + late
    quiet = ago(r"  u-2\n    monitor: quiet since ([\d.]+)s ago, last answer never — quiet: "
                r"stop in flight \(recorded by the proxy\)\n")
    assert 3 - 0.05 <= quiet <= 3 + late


def test_status_shows_the_vcpus_each_instance_was_last_scaled_to(redis_client, redis_server):
    redis_schema.publish_routes(redis_client, "compute1", ["u-1", "u-2"])
    redis_schema.publish_monitor(redis_client, {"u-1": {"state": "healthy"}}, 30)
    redis_schema.record_vcpus(redis_client, "u-1", 2, 4, "op-7")
    out = run(redis_server, "status").stdout
    assert re.search(r"  u-1\n    monitor: healthy [^\n]*\n    vCPUs: scaled to 2 of 4 online by "
                     r"operation op-7, \d+s ago\n  u-2\n", out), out
    assert out.count("vCPUs:") == 1  # u-2 has no record


def _group_fixture(redis_client):
    """A pair (A, B) and a member C without messaging; B is suspect; A sent two messages."""
    import uuid

    from novaproxy.groups import Group, Member

    a, b, c = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    redis_schema.cache_group(redis_client, Group("g-1", "pair", "anti-affinity", (a, b, c)))
    redis_schema.cache_member(redis_client, Member(a, True, True, "ACTIVE", "compute1", "g-1"))
    redis_schema.cache_member(redis_client, Member(b, True, True, "ACTIVE", "compute2", "g-1"))
    redis_schema.cache_member(redis_client, Member(c, True, False, "SHUTOFF", "compute2",
                                                   "g-1"))
    redis_schema.publish_monitor(redis_client, {b: {"state": "suspect", "since": "1"}}, 30)
    now = redis_schema.redis_time(redis_client)
    redis_schema.open_report(redis_client, "g-1", "m1", [b], now + 60)
    redis_schema.mark_report(redis_client, "g-1", "m1", b, "delivered")
    redis_schema.note_sent(redis_client, "g-1", "m1", a, "*", 123, now - 2)
    redis_schema.open_report(redis_client, "g-1", "m2", [b], now - 1)  # expired by now
    redis_schema.note_sent(redis_client, "g-1", "m2", a, b, 7, now - 1)
    return a, b, c


def test_group_shows_members_states_and_recent_messages_never_bodies(redis_client,
                                                                      redis_server):
    a, b, c = _group_fixture(redis_client)
    for name in (a, "g-1"):  # by a member or by the group's id
        done = run(redis_server, "group", name)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == 'group g-1 "pair", policy anti-affinity: 3 member(s)'
        assert lines[1:4] == [
            f"  {a} on compute1: Nova ACTIVE, monitor not watched, messaging on",
            f"  {b} on compute2: Nova ACTIVE, monitor suspect, messaging on",
            f"  {c} on compute2: Nova SHUTOFF, monitor not watched, messaging off"]
        assert lines[4] == "recent messages, oldest first: 2"
        assert re.fullmatch(rf"  \S+ \S+  m1 from {a} to all, 123 bytes: {b} delivered",
                            lines[5]), lines[5]
        assert lines[6].endswith(f"m2 from {a} to {b}, 7 bytes: {b} expired"), lines[6]
    assert len(run(redis_server, "group", "g-1", "-n", "1").stdout.splitlines()) == 6


def test_groups_lists_cached_groups_and_group_refuses_the_unknown(redis_client,
                                                                  redis_server):
    import uuid

    from novaproxy.groups import Member

    _group_fixture(redis_client)
    lonely, orphan = str(uuid.UUID(int=9)), str(uuid.UUID(int=8))
    redis_schema.cache_member(redis_client, Member(lonely, True, True, "ACTIVE", "c1", ""))
    # A member whose group record expired still names its group.
    redis_schema.cache_member(redis_client, Member(orphan, True, True, "ACTIVE", "c1", "g-2"))
    out = run(redis_server, "groups").stdout
    assert out.splitlines() == [
        "server groups in the membership cache: 2",
        '  g-1 "pair" (anti-affinity): 3 member(s), 2 taking messages',
        "  g-2 (group record expired): 1 member(s), 1 taking messages"]
    expired = run(redis_server, "group", orphan)
    assert expired.returncode == 0
    assert expired.stdout.startswith("group g-2 (group record expired: members as their "
                                     f"own records say): 1 member(s)\n  {orphan} on c1")
    alone = run(redis_server, "group", lonely)
    assert alone.returncode == 1 and "in no server group" in alone.stdout
    unknown = run(redis_server, "group", "g-nope")
    assert unknown.returncode == 1 and "no server group" in unknown.stdout
