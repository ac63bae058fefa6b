"""Peer state notices in the guest: delivered as host requests of phase ``peer``, they
reach the applications that asked for them (``on_peer``) and the group hooks, each
newer notice once per peer (guestd, its client library and hook scripts as real
processes)."""

import json
import time
import uuid

from guestd import peer_protocol, protocol
from guestd.client import Application
from guestd.peer_protocol import PeerNotice
from harness.guestd_peers import group_request, spool, wait_answer

PEER = "6f1c9a52-54b1-4a43-9a3c-2f9d51c7f0e1"
HOOK = """#!/bin/sh
cat > "$0.stdin"
echo "$1 $2" > "$0.args"
"""


def notice(seq, state, cause=""):
    return {"peer": PEER, "name": "db-1", "state": state, "cause": cause,
            "since": 1000.0 + seq, "seq": seq}


def tell(guest, details):
    return wait_answer(spool(guest, group_request(guest, protocol.PEER, details)))


def test_notices_reach_on_peer_and_the_group_hooks_and_a_stale_one_does_not(guest):
    heard, messages = [], []
    apps = [Application(f"app-{uuid.uuid4().hex[:4]}", events=["reboot"], on_peer=heard.append,
                        socket_path=guest.guestd_socket).start(),
            Application("msgs", events=["reboot"], on_message=messages.append,
                        socket_path=guest.guestd_socket).start()]
    assert all(a.registered.wait(5) for a in apps)
    hook = guest.add_group_hook("10-record", HOOK)
    answer = tell(guest, notice(2, "failed", "hung"))
    assert answer["result"] == protocol.ACCEPT
    assert sorted(v["name"] for v in answer["voters"]) == sorted(
        [apps[0].name, "msgs", "10-record"])
    assert tell(guest, notice(1, "suspect"))["voters"] == []  # stale: nobody is told
    tell(guest, notice(3, "recovering"))
    deadline = time.monotonic() + 5
    while len(heard) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert heard == [PeerNotice(PEER, "db-1", "failed", "hung", 1002.0, 2),
                     PeerNotice(PEER, "db-1", "recovering", "", 1003.0, 3)]
    assert messages == []  # an application without on_peer ignores them
    with open(hook + ".stdin") as f:
        assert json.load(f) == peer_protocol.peer_notice(notice(3, "recovering"))
    with open(hook + ".args") as f:
        assert f.read().split() == [protocol.GROUP, protocol.PEER]
    for a in apps:
        a.stop()


def test_malformed_notice_details_get_a_failure(guest):
    answer = tell(guest, {**notice(1, "failed"), "peer": "not-a-uuid"})
    assert answer["type"] == protocol.FAILURE and "not a Nova UUID" in answer["message"]
