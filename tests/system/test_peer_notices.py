"""Peer state notices on the whole system: real Nova with a real server group spread
over both fake computes, real Redis, the proxy driven by real python-novaclient, one
agent per host, and real qemu-ga + guestd guests whose applications use the guestd
client API (``on_peer``).

Three members on two hosts; what happens to one is told to the two others, across
hosts: a hang (failed, recovering, healthy), a stop through the proxy (prepared before
Nova's action exists, then ended while the member is off), and a host whose agent is
killed (its members unreachable, then reachable). How fast is measured by
``bench/peer_notices.py``, not asserted here.
"""

import time
import uuid

import pytest

from guestd.client import Application
from harness.audit import wait_audits, wait_state
from harness.groups import Member, apart, boot_members, delete_group, kill_agent, server_group
from harness.processes import wait_for
from novaproxy import audit, flavor, peers

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def peers_flavor(stack):
    return stack.flavor(f"sys-peers-{uuid.uuid4().hex[:6]}",
                        {flavor.GROUP_MESSAGING: "true", flavor.MONITORING: "true",
                         flavor.NEGOTIATION: "true"})


@pytest.fixture
def trio(stack, peers_flavor):
    """Three healthy members of a new server group, on both hosts."""
    gid = server_group(stack)
    members = boot_members(stack, peers_flavor, gid, prefix="p")
    try:
        for m in members:
            wait_state(stack, m.instance, "healthy")
        yield members
    finally:
        for m in members:
            m.stop()
        delete_group(stack, gid)  # its servers go after the test (tests/conftest.py)


def states(member, peer) -> list:
    return [n.state for n in member.of(peer)]


def test_a_hung_member_is_told_failed_recovering_and_healthy_across_hosts(
        stack, trio, peers_flavor):
    (hung, neighbour), alone = apart(trio)
    outside, _ = stack.boot("p-outside", peers_flavor)  # in no group: hears nothing
    outsider = Member(stack.guests[outside.id])
    try:
        stack.guests[hung.instance].hang()
        failure = wait_audits(stack, hung.instance, audit.FAILURE)[0]
        for ears in (neighbour, alone):
            _, failed = ears.heard(hung.instance, "failed")
            assert (failed.cause, failed.name) == ("hung", f"p-{trio.index(hung)}")
            # When the monitor declared it, not when the notice arrived.
            assert abs(failed.since - float(failure["time"])) < 2.0
            ears.heard(hung.instance, "recovering")
        wait_for(lambda: "reboot" in stack.instance_actions(hung.instance), 20,
                 "the hard reboot")
        stack.guests[hung.instance].unhang()  # what Nova's reboot would do to a real guest
        for ears in (neighbour, alone):
            wait_for(lambda e=ears: states(e, hung.instance)[-1:] == ["healthy"], 30,
                     "the healthy notice")
            told = states(ears, hung.instance)
            assert told.index("failed") < told.index("recovering") < len(told) - 1
            seqs = [n.seq for n in ears.of(hung.instance)]
            assert seqs == sorted(set(seqs))  # each once, in order
        assert states(hung, hung.instance) == []  # nobody is told about itself
        assert outsider.notices == []
    finally:
        outsider.stop()


def test_a_stop_through_the_proxy_is_told_before_nova_acts_then_ended(stack, trio):
    stopped, others = trio[0], trio[1:]
    at_prepare: dict = {}

    def on_notice(notice):  # the stopped member's prepare: Nova has not been asked yet
        if notice.phase != "prepare":
            return
        try:  # within the prepare's own deadline
            at_prepare["told"] = all(wait_for(
                lambda e=ears: "stop prepared" in states(e, stopped.instance),
                max(notice.timeout - 2, 1), "the prepared notice") for ears in others)
        finally:
            at_prepare["actions"] = stack.instance_actions(stopped.instance)

    app = Application("stop-watch", events=["stop"], on_notice=on_notice,
                      socket_path=stack.guests[stopped.instance].guestd_socket).start()
    assert app.registered.wait(5)
    try:
        stack.nova().servers.stop(stopped.instance)  # novaclient, through the proxy
        stack.wait_for_server(stopped.instance, "SHUTOFF")
        assert at_prepare.get("told") and "stop" not in at_prepare["actions"]
        for ears in others:
            _, ended = ears.heard(stopped.instance, "stop ended")
            told = states(ears, stopped.instance)
            assert told.index("stop prepared") < told.index("stop ended")
            assert told.count("stop ended") == 1
        # Told while the member is still off: its own end notice waits for its start.
        assert stack.nova(direct=True).servers.get(stopped.instance).status == "SHUTOFF"
    finally:
        app.stop()


def test_a_host_whose_agent_is_killed_has_its_members_told_unreachable_then_reachable(
        stack, trio):
    pair, alone = apart(trio)
    host = pair[0].host
    killed = time.monotonic()
    kill_agent(stack, host)
    try:
        for m in pair:
            _, lost = alone.heard(m.instance, peers.UNREACHABLE)
            assert lost.cause == f"host {host} stopped answering"
        took = time.monotonic() - killed
    finally:
        stack.restart_agent(host)
    # Back: reachable, or a newer state that replaced it before the peer took it.
    for m in pair:
        wait_for(lambda m=m: states(alone, m.instance)[-1] != peers.UNREACHABLE, 30,
                 f"{m.instance} back")
        assert states(alone, m.instance).count(peers.UNREACHABLE) == 1  # de-duplicated
    # The members on the killed host heard nothing of each other meanwhile (their agent
    # was down), and nothing of themselves.
    for m in pair:
        assert peers.UNREACHABLE not in states(m, m.instance)
    print(f"agent of {host} killed -> both its members told unreachable: {took:.1f}s")
