"""The novaproxy story on real components, narrated.

Brings up redis-server, a real Nova API (nova's functional fixtures: two
fake-driver computes), one novaproxy-agent per compute host, novaproxy-api in
front of Nova, and for each VM a "guest" (qemu-ga + guestd) running the example
application. Then a real python-novaclient, pointed at the proxy, plays:

1. a reboot vetoed by the database application inside the VM (HTTP 409, reason);
2. a stop accepted by the same application once it is idle (prepare, then Nova),
   and the start whose end notice the guest gets once it answers again;
3. the guest hangs: the agent declares the failure within seconds and Nova
   hard-reboots the VM, once;
4. a VM whose flavor does not ask for negotiation: its reboot passes untouched;
5. an active/standby pair in a Nova server group, on both hosts, with no network: a
   message from one reaches the other through their hosts, and the standby hears of
   the active's reboot before Nova acts, then of its end.

Everything is torn down at the end, also on Ctrl-C or a failure (whose logs
are then kept). Run it with: ./deploy/demo.sh
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from novaclient import exceptions

from harness.groups import boot_members, server_group
from harness.guest import REPO
from harness.processes import wait_for
from harness.stack import Stack
from novaproxy import audit, redis_schema
from novaproxy.cli import format_event

BOLD, DIM, RED, GREEN, RESET = ("\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[0m") \
    if sys.stdout.isatty() else ("",) * 5
STEP = [0]


def step(title: str) -> None:
    STEP[0] += 1
    print(f"\n{BOLD}── {STEP[0]}. {title}{RESET}", flush=True)


def say(message: str) -> None:
    print(f"   {message}", flush=True)


def tail(path: str, lines: int = 4, indent: str = "   │ ") -> None:
    with open(path, errors="replace") as f:
        for line in f.readlines()[-lines:]:
            print(f"{DIM}{indent}{line.rstrip()}{RESET}")


def start_example_app(stack: Stack, instance: str, busy_file: str,
                      apps: list[subprocess.Popen]) -> None:
    """The example application in the guest of ``instance``, added to ``apps`` at once
    (so that it is stopped whatever happens next)."""
    guest = stack.guests[instance]
    with open(os.path.join(guest.workdir, "app.log"), "ab") as log:
        apps.append(subprocess.Popen(
            [sys.executable, os.path.join(REPO, "deploy", "examples", "guest_app.py"),
             "--name", "db", "--busy-file", busy_file, "--socket", guest.guestd_socket],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": REPO}))
    deadline = time.monotonic() + 10
    while "registered" not in open(os.path.join(guest.workdir, "guestd.log")).read():
        if time.monotonic() > deadline:
            raise RuntimeError("the example application did not register with guestd")
        time.sleep(0.05)


def stop_example_apps(apps: list[subprocess.Popen]) -> None:
    for app in apps:
        app.terminate()
    for app in apps:
        try:
            app.wait(5)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait(5)


def wait_app_log(stack: Stack, instance: str, text: str, timeout: float = 30) -> None:
    """Wait until the guest's application has logged ``text`` (it heard the notice)."""
    path = os.path.join(stack.guests[instance].workdir, "app.log")

    def logged() -> bool:
        with open(path, errors="replace") as f:
            return text in f.read()

    wait_for(logged, timeout, f"{text!r} in the application's log")


def wait_status(stack: Stack, server_id: str, status: str) -> None:
    started = time.monotonic()
    stack.wait_for_server(server_id, status)
    say(f"Nova reports the server {status} ({time.monotonic() - started:.1f}s)")


def play(stack: Stack, workdir: str, apps: list[subprocess.Popen]) -> None:
    nova = stack.nova()  # python-novaclient, endpoint = the proxy
    client = redis_schema.connect(stack.redis.url)

    step("Flavors: the operator's lever")
    ha = stack.flavor("ha.small", {"guest:negotiation": "true", "guest:monitoring": "true"})
    plain = stack.flavor("plain.small")
    say(f"ha.small    extra specs {ha.get_keys()}")
    say("            → lifecycle operations are negotiated, the guest is monitored")
    say("plain.small no extra specs                        → everything passes through")

    step("Boot two VMs; each gets a guest (qemu-ga + guestd) on the host Nova chose")
    db, db_host = stack.boot("db-1", ha)
    web, web_host = stack.boot("web-1", plain)
    say(f"db-1  {db.id} on {db_host} (flavor ha.small)")
    say(f"web-1 {web.id} on {web_host} (flavor plain.small)")
    busy = os.path.join(workdir, "db-1-replicating")
    start_example_app(stack, db.id, busy, apps)
    start_example_app(stack, web.id, os.path.join(workdir, "web-1-busy"), apps)
    say("the example application 'db' registered with guestd in both VMs")
    with open(os.path.join(workdir, "web-1-busy"), "w") as f:
        f.write("web-1 would refuse, if it were asked")

    step("Reboot db-1 while its database replicates: the application says NACK")
    with open(busy, "w") as f:
        f.write("replication to the standby is in progress (42% done)")
    say(f"$ nova reboot db-1    (novaclient → {stack.proxy_url})")
    started = time.monotonic()
    try:
        nova.servers.reboot(db.id)
        say(f"{RED}unexpected: the reboot was accepted{RESET}")
    except exceptions.Conflict as exc:
        say(f"{RED}HTTP 409{RESET} after {(time.monotonic() - started) * 1000:.0f} ms: {exc}")
    state = stack.nova(direct=True).servers.get(db.id)
    say(f"Nova never saw the request: db-1 is {state.status}, its actions: "
        f"{', '.join(stack.instance_actions(db.id))}")
    say("in the guest:")
    tail(os.path.join(stack.guests[db.id].workdir, "app.log"), 1)

    step("The replication finishes; stop db-1: the application says ACK")
    os.unlink(busy)
    say("$ nova stop db-1")
    started = time.monotonic()
    nova.servers.stop(db.id)
    say(f"{GREEN}HTTP 202{RESET} after {(time.monotonic() - started) * 1000:.0f} ms: "
        "vote accepted, prepare delivered, request forwarded to Nova")
    wait_status(stack, db.id, "SHUTOFF")
    say("in the guest:")
    tail(os.path.join(stack.guests[db.id].workdir, "app.log"), 2)

    step("Start db-1 again: once it answers, the guest hears its stop's end, then the start's")
    nova.servers.start(db.id)
    wait_status(stack, db.id, "ACTIVE")
    # Evidence newer than the start: the guest heard the start's end, and the monitor
    # heard its qemu-ga since (a view from before the stop still says "healthy").
    wait_app_log(stack, db.id, "start end")
    say("in the guest:")
    tail(os.path.join(stack.guests[db.id].workdir, "app.log"), 2)
    stack.wait_settled(db.id)
    say("the agent's monitor hears db-1 again: healthy")

    step("db-1's guest hangs: the agent notices within seconds, and Nova hard-reboots it")
    say("the agent pings qemu-ga every second; three misses declare a failure")
    hung_at = time.time()
    stack.guests[db.id].hang()  # qemu-ga SIGSTOPped: what a hung guest kernel looks like
    failure = wait_for(lambda: [f for _, f in redis_schema.read_events(client, 50)
                                if f["instance"] == db.id and f["kind"] == audit.FAILURE
                                and float(f["time"]) >= hung_at], 30, "the failure")[0]
    say(f"{RED}failure declared{RESET} {float(failure['time']) - hung_at:.1f} s after the hang: "
        f"{failure['why']}")
    wait_for(lambda: "reboot" in stack.instance_actions(db.id), 30, "Nova's hard reboot")
    say(f"recovery: Nova hard reboot requested (claimed in Redis first, so exactly once); "
        f"db-1's actions: {', '.join(stack.instance_actions(db.id))}")
    stack.guests[db.id].unhang()  # what the reboot does to a real guest
    stack.wait_settled(db.id)
    reboots = stack.instance_actions(db.id).count("reboot")
    if reboots != 1:
        raise RuntimeError(f"db-1 was hard-rebooted {reboots} times, not once")
    say(f"{GREEN}db-1 answers again{RESET}: the monitor is back to healthy, one reboot")

    step("Reboot web-1 (flavor without guest:negotiation): passes through untouched")
    nova.servers.reboot(web.id)
    wait_status(stack, web.id, "ACTIVE")
    say(f"web-1's actions in Nova: {', '.join(stack.instance_actions(web.id))}; "
        "its application was not asked")

    pair_of_vms(stack, nova, client)

    step("Everything else is plain Nova: GET /servers/detail through the proxy")
    for server in nova.servers.list():
        say(f"{server.name:<6} {server.status:<8} {server.id}")

    step("The audit trail (novaproxy events)")
    for _, fields in redis_schema.read_events(client, 20):
        say(format_event(fields))

    step("The operator's CLI: novaproxy status, novaproxy operations, novaproxy groups")
    for command in ("status", "operations", "groups"):
        say(f"$ novaproxy {command}")
        done = subprocess.run([sys.executable, "-m", "novaproxy.cli", "--redis-url",
                               stack.redis.url, command], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": REPO}, timeout=30)
        for line in done.stdout.splitlines():
            say(line)


def pair_of_vms(stack: Stack, nova, client) -> None:
    """Server-group messaging and peer notices between two VMs on both hosts."""
    step("An active/standby pair in a server group: no network needed to talk")
    pair = stack.flavor("ha.pair", {"guest:negotiation": "true", "guest:monitoring": "true",
                                    "guest:group_messaging": "true"})
    gid = server_group(stack, name="pair")
    say(f"$ openstack server group create --policy soft-anti-affinity pair   → {gid}")
    active, standby = boot_members(stack, pair, gid, count=2, prefix="pair")
    say(f"pair-0 (active)  {active.instance} on {active.host}")
    say(f"pair-1 (standby) {standby.instance} on {standby.host}")
    seq = active.app.broadcast({"role": "active"})
    got, = standby.arrived(1)
    say(f"pair-1 got {got.body} from {got.sender} (the host says who sent it)")
    final = active.final([seq])[seq]
    say(f"pair-0 is told: {final.status} to {', '.join(final.members)}")

    step("Reboot the active: the standby hears of it before Nova acts, then of its end")
    say("(the prepare notice is sent before the request goes to Nova: time to take over)")
    say("$ nova reboot pair-0")
    nova.servers.reboot(active.instance)
    for state in ("reboot prepared", "reboot ended"):
        at, notice = standby.heard(active.instance, state)
        say(f"pair-1 hears: pair-0 {notice.state} ({notice.cause}), "
            f"{(at - notice.since) * 1000:.0f} ms after it happened")
    for member in (active, standby):
        member.stop()


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="np-demo-")
    stack = None
    apps: list[subprocess.Popen] = []
    keep_logs = bool(os.environ.get("NOVAPROXY_DEMO_KEEP_LOGS"))

    def interrupted(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    print(f"{BOLD}novaproxy demo{RESET}: the whole system on real components "
          f"(logs in {workdir})")
    try:
        step("Bring up the stack")
        stack = Stack(os.path.join(workdir, "stack"), log=say)
        play(stack, workdir, apps)
        print(f"\n{GREEN}{BOLD}demo complete{RESET}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down")
        return 130
    except BaseException:
        keep_logs = True  # what each process logged is what explains the failure
        raise
    finally:
        # A second Ctrl-C must not leave processes behind half-way through.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_example_apps(apps)
        if stack is not None:
            step("Tear down")
            stack.stop()
            say("all processes stopped")
        if keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
