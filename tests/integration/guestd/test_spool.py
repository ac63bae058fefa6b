"""guestd's spool: requests as files, answered without any process started."""

import logging
import os
import shutil
import stat
import threading
import time
import types

from guestd import daemon, inotify, protocol
from guestd.client import Vote
from guestd.spool import INCOMPLETE, POLL
from harness.guestd_peers import app, ctl, log_count, spool, wait_answer


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
    # One never completed goes after INCOMPLETE.
    with open(path, "wb") as f:
        f.write(frame[:10])
    deadline = time.monotonic() + INCOMPLETE + 3
    while os.path.exists(path):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert log_count(guest, "still incomplete") == 1
