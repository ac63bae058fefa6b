#!/usr/bin/python3 -IS
"""The vm tier's group application, /usr/bin/group-app in the guest (tests/vm/test_groups.py).

    group-app send TO BODY OUT       queue BODY (JSON) for TO (a member's Nova UUID, or *
                                     for every other member) and write the host's result
    group-app echo PEER COUNT OUT    send each of PEER's first COUNT messages back to it
                                     (OUT.ready written once it takes messages)
    group-app ping PEER COUNT OUT    COUNT unicasts to PEER one at a time, each waiting for
                                     its echo; the round trips, in seconds of this guest's
                                     monotonic clock

Each writes its outcome as JSON to OUT, atomically, when done (the test reads it with
guest-file calls). It uses guestd.client and the standard library guestd itself needs,
nothing more: the image carries only that (deploy/guest-image/stdlib_files.py).
"""

import json
import os
import sys
import threading
import time

from guestd.client import Application, GroupError

WAIT = 60.0  # seconds for any one answer: a TCG guest on a loaded host is slow


def write(path: str, outcome: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(outcome, f)
    os.replace(path + ".tmp", path)


def start(app: Application) -> None:
    app.start()
    if not app.registered.wait(WAIT):
        raise SystemExit("guestd did not register the application")


def send(to: str, body: object) -> dict:
    """The host's verdict on one message: status, reason, message id, members."""
    told = threading.Event()
    verdict: dict = {}

    def result(r) -> None:
        if told.is_set():  # the final report (delivered or expired): not waited for here
            return
        verdict.update(seq=r.seq, status=r.status, reason=r.reason, message=r.message,
                       members=r.members)
        told.set()

    app = Application("group-send", events=("group",), on_result=result)
    start(app)
    try:
        seq = app.broadcast(body) if to == "*" else app.send(to, body)
    except GroupError as exc:
        app.stop()
        return {"error": exc.reason}
    if not told.wait(WAIT):
        verdict["error"] = "no result"
    app.stop()
    return {**verdict, "queued": seq}


def echo(peer: str, count: int, out: str) -> dict:
    echoed = []
    done = threading.Event()

    def message(m) -> None:
        if m.sender == peer and len(echoed) < count:
            app.send(peer, m.body)
            echoed.append(m.seq)
            if len(echoed) == count:
                done.set()

    app = Application("echo", on_message=message)  # named before a message can come
    start(app)
    write(out + ".ready", {"registered": True})
    done.wait(WAIT * count)
    app.stop()
    return {"echoed": len(echoed)}


def ping(peer: str, count: int) -> dict:
    back: dict = {}
    arrived = threading.Condition()

    def message(m) -> None:
        if m.sender == peer and isinstance(m.body, dict) and "ping" in m.body:
            with arrived:
                back[m.body["ping"]] = time.monotonic()
                arrived.notify_all()

    app = Application("pinger", on_message=message)
    start(app)
    trips = []
    try:
        for n in range(count):
            sent = time.monotonic()
            app.send(peer, {"ping": n})
            with arrived:
                if not arrived.wait_for(lambda n=n: n in back, WAIT):
                    return {"round_trips": trips, "error": f"no echo of ping {n}"}
            trips.append(back[n] - sent)
    finally:
        app.stop()
    return {"round_trips": trips}


def main(argv: list) -> int:
    command, target, arg, out = argv[1:5]
    if command == "send":
        outcome = send(target, json.loads(arg))
    elif command == "echo":
        outcome = echo(target, int(arg), out)
    elif command == "ping":
        outcome = ping(target, int(arg))
    else:
        raise SystemExit(f"unknown command {command!r}")
    write(out, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
