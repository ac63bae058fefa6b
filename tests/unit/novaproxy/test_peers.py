"""Peer state notices, the pure parts: who is told, the states, the request."""

import uuid

from guestd import protocol
from novaproxy import groups, peers
from novaproxy.groups import Group, Member

A, B, C, D = (str(uuid.UUID(int=i)) for i in range(1, 5))
GROUP = Group("g", "db", "anti-affinity", (A, B, C))


def member(instance, messaging=True, gid="g"):
    return Member(instance, known=True, messaging=messaging, status="ACTIVE", host="h",
                  group=gid, name=f"vm-{instance[-1]}")


def test_the_other_members_that_take_messages_are_told():
    members = {A: member(A), B: member(B), C: member(C, messaging=False)}
    assert peers.told(A, members[A], GROUP, members) == [B]


def test_a_peer_whose_own_messaging_is_off_is_still_told_about():
    members = {A: member(A, messaging=False), B: member(B), C: member(C)}
    assert peers.told(A, members[A], GROUP, members) == [B, C]


def test_nobody_is_told_of_a_peer_outside_any_group_or_unknown():
    members = {B: member(B), C: member(C)}
    assert peers.told(A, None, GROUP, members) == []
    assert peers.told(A, Member(A, known=False), GROUP, members) == []
    assert peers.told(A, member(A, gid=""), GROUP, members) == []
    assert peers.told(A, member(A), None, members) == []
    assert peers.told(D, member(D), GROUP, members) == []  # not listed by the group


def test_nobody_is_told_in_a_group_over_its_size_limit():
    many = tuple(str(uuid.UUID(int=i)) for i in range(1, groups.MAX_GROUP + 2))
    big = Group("g", "big", "affinity", many)
    members = {m: member(m) for m in many}
    assert peers.told(many[0], members[many[0]], big, members) == []


def test_states():
    assert peers.operation_state("reboot", peers.PREPARED) == "reboot prepared"
    assert peers.libvirt_state("STOPPED_SHUTDOWN", False) == peers.STOPPED
    assert peers.libvirt_state("STOPPED_DESTROYED", False) == peers.STOPPED
    assert peers.libvirt_state("STOPPED_FAILED", True) == peers.CRASHED
    assert peers.libvirt_state("CRASHED_PANICKED", True) == peers.CRASHED
    assert peers.libvirt_state("SUSPENDED_PAUSED", False) == peers.PAUSED
    assert peers.libvirt_state("STOPPED_MIGRATED", False) == ""
    assert peers.libvirt_state("SUSPENDED_MIGRATED", False) == ""
    assert peers.libvirt_state("STARTED_BOOTED", False) == peers.RUNNING
    assert peers.libvirt_state("RESUMED_UNPAUSED", False) == peers.RUNNING
    assert peers.libvirt_state("STARTED_MIGRATED", False) == ""
    assert peers.libvirt_state("RESUMED_POSTCOPY", False) == ""
    assert peers.libvirt_state("DEFINED_ADDED", False) == ""


def test_a_notice_and_its_request():
    n = peers.notice(A, "vm-1", "failed", "hung" * 100, 12.5, 3)
    assert n == {"peer": A, "name": "vm-1", "state": "failed", "cause": ("hung" * 100)[:200],
                 "since": 12.5, "seq": 3}
    req = peers.peer_request(B, n, 5.0)
    assert (req["id"], req["instance"], req["event"], req["phase"], req["details"]) == (
        f"peer-{A}-3", B, protocol.GROUP, protocol.PEER, n)
