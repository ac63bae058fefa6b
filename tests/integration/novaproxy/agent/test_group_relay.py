"""The agents' group-messaging relay between real Nova (a real server group), real Redis
and real qemu-ga + guestd guests, driven through the Python client API as applications
use it: ``broadcast`` / ``send`` / ``group_status`` go into guestd's outbox, the host
checks every entry, and what comes back is seen where an application sees it, in its
``on_message`` and ``on_result`` callbacks (and ``GroupError`` for what guestd refuses
at once).
"""

import time
import uuid

import pytest

from guestd import group_protocol as gp
from guestd.client import GroupError
from harness.groups import Member, delete_group, server_group, wait_known
from harness.guestd_peers import log_count
from harness.processes import wait_for
from novaproxy import flavor, groups, redis_schema


@pytest.fixture
def member():
    made = []

    def make(guest, name="db"):
        made.append(Member(guest, name=name))
        return made[-1]

    yield make
    for m in made:
        m.app.stop()


@pytest.fixture
def group(stack):
    gid = server_group(stack)
    yield gid
    delete_group(stack, gid)


@pytest.fixture
def stack_redis(stack):
    client = redis_schema.connect(stack.redis.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def messaging_flavor(stack):
    return stack.flavor(f"messaging-{uuid.uuid4().hex[:6]}", {flavor.GROUP_MESSAGING: "true"})


def reported(client, gid, message_id, states):
    wait_for(lambda: redis_schema.report(client, gid, message_id, time.time()) == states, 10,
             "the delivery report")


def test_members_get_what_a_member_sends_and_every_send_gets_its_result(
        stack, group, messaging_flavor, plain_flavor, member, stack_redis):
    (a, _), (b, _) = (stack.boot(f"m-{i}", messaging_flavor, group=group) for i in "ab")
    c, _ = stack.boot("m-plain", plain_flavor, group=group)
    d, _ = stack.boot("m-outside", messaging_flavor)
    apps = {s.id: member(stack.guests[s.id]) for s in (a, b, c, d)}
    wait_known(stack, group, {a.id, b.id})
    sender = apps[a.id]

    with pytest.raises(GroupError) as too_large:  # guestd refuses it at once
        sender.app.broadcast("x" * gp.MAX_BODY)
    assert too_large.value.reason == gp.TOO_LARGE
    seqs = [sender.app.broadcast({"hello": 1, "from": d.id}),  # a spoofed "from" is data
            sender.app.send(b.id, "just you"), sender.app.send(c.id, "plain"),
            sender.app.send(d.id, "outside"), sender.app.send(a.id, "myself"),
            sender.app.group_status()]
    assert seqs == [1, 2, 3, 4, 5, 6]  # the refused body took no seq
    outsider = apps[d.id].app.broadcast("from outside the group")

    results = sender.told(seqs)
    assert results[1].status == results[2].status == gp.ACCEPTED
    assert results[1].members == results[2].members == {b.id: groups.PENDING}
    assert [(results[s].status, results[s].reason) for s in (3, 4, 5)] == [
        (gp.REFUSED, groups.PEER_NOT_ENABLED), (gp.REFUSED, groups.NOT_A_MEMBER),
        (gp.REFUSED, groups.NOT_A_MEMBER)]
    status = results[6].group
    assert status["group"] == group and set(status["members"]) == {a.id, b.id, c.id}
    assert status["members"][c.id]["messaging"] is False
    assert status["members"][b.id]["status"] == "ACTIVE"
    refusal = apps[d.id].told([outsider])[outsider]
    assert (refusal.status, refusal.reason) == (gp.REFUSED, groups.NOT_IN_GROUP)

    got = apps[b.id].arrived(2)
    assert [(m.sender, m.seq, m.body) for m in got] == [
        (a.id, 1, {"hello": 1, "from": d.id}), (a.id, 2, "just you")]
    assert [m.to for m in got] == ["*", b.id]
    assert [m.id for m in got] == [results[s].message for s in (1, 2)]
    assert all(m.group == group for m in got)
    for seq in (1, 2):
        reported(stack_redis, group, results[seq].message, {b.id: groups.DELIVERED})
    # Both reached b: a's application is told so, a second result for each seq.
    wait_for(lambda: len(sender.results) == 8, 10, "the final reports")
    assert [(r.seq, r.status, r.members) for r in sender.results[6:]] == [
        (seq, gp.DELIVERED, {b.id: groups.DELIVERED}) for seq in (1, 2)]
    time.sleep(1.0)  # the outbox is read again meanwhile: nothing is taken or told twice
    assert len(apps[b.id].messages) == 2 and len(sender.results) == 8
    assert not apps[c.id].messages and not apps[d.id].messages and not sender.messages


def test_a_sender_past_its_rate_is_refused_and_peers_get_the_rest_once_in_order(
        stack, group, messaging_flavor, member):
    (a, _), (b, _) = (stack.boot(f"r-{i}", messaging_flavor, group=group) for i in "ab")
    sender, peer = member(stack.guests[a.id]), member(stack.guests[b.id])
    wait_known(stack, group, {a.id, b.id})  # a broadcast taken before reaches nobody
    # As many as an outbox holds, queued at once: far more than the sender's burst plus
    # what its bucket refills while the host takes them (MAX_TAKEN a poll).
    seqs = [sender.app.broadcast(n) for n in range(gp.MAX_OUTBOX)]
    results = sender.told(seqs)
    accepted = [s for s in seqs if results[s].status == gp.ACCEPTED]
    refused = [s for s in seqs if results[s].status == gp.REFUSED]
    assert len(accepted) >= groups.SENDER_BURST and refused
    assert {results[s].reason for s in refused} == {groups.RATE_LIMITED}
    got = peer.arrived(len(accepted))
    assert [m.seq for m in got] == accepted and [m.body for m in got] == [
        s - 1 for s in accepted]
    time.sleep(1.0)
    assert len(peer.messages) == len(accepted)


def test_a_member_with_no_application_yet_gets_the_message_once_one_registers(
        stack, group, messaging_flavor, member, stack_redis):
    (a, _), (b, _) = (stack.boot(f"l-{i}", messaging_flavor, group=group) for i in "ab")
    sender = member(stack.guests[a.id])
    seq = sender.app.broadcast("early")
    mid = sender.told([seq])[seq].message
    # b's guestd answers, naming nobody: the host keeps the message and tries again.
    wait_for(lambda: log_count(stack.guests[b.id], "nobody takes group messages yet"), 10,
             "a delivery to b while nothing takes group messages there")
    assert redis_schema.report(stack_redis, group, mid, time.time()) == {b.id: groups.PENDING}
    late = member(stack.guests[b.id])
    got = late.arrived(1)
    assert [(m.id, m.sender, m.body) for m in got] == [(mid, a.id, "early")]
    reported(stack_redis, group, mid, {b.id: groups.DELIVERED})
    time.sleep(2.5)  # longer than the host's retry: still once
    assert len(late.messages) == 1


def test_a_vm_in_no_group_is_refused_and_a_hostile_outbox_costs_nothing_else(
        stack, messaging_flavor, member, stack_redis):
    loner, _ = stack.boot("m-loner", messaging_flavor)
    guest = stack.guests[loner.id]
    app = member(guest)
    seqs = [app.app.broadcast("anyone?"), app.app.send(str(uuid.uuid4()), "you?")]
    results = app.told(seqs)
    assert {(r.status, r.reason) for r in results.values()} == {
        (gp.REFUSED, groups.NOT_IN_GROUP)}
    epoch = redis_schema.outbox_progress(stack_redis, loner.id)[0]
    # Garbage, then a huge file, where guestd keeps its outbox: nothing is taken, nothing
    # breaks, and guestd's next write makes it valid again.
    with open(guest.outbox_file, "wb") as f:
        f.write(b"{not json")
    time.sleep(1.0)
    with open(guest.outbox_file, "wb") as f:
        f.write(b" " * (gp.MAX_OUTBOX_BYTES + 10))
    time.sleep(1.0)
    assert redis_schema.outbox_progress(stack_redis, loner.id)[:2] == (epoch, 2)
    third = app.app.broadcast("again")
    assert app.told([third])[third].reason == groups.NOT_IN_GROUP
    # A restarted guestd begins a new epoch, read afresh from seq 1.
    guest.restart_guestd()
    assert wait_for(lambda: _broadcast_when_connected(app.app, "new epoch"), 10,
                    "a send to the new guestd") == 1
    wait_for(lambda: len(app.results) == 4, 20, "the new epoch's result")
    assert (app.results[-1].seq, app.results[-1].reason) == (1, groups.NOT_IN_GROUP)
    new_epoch, taken, _ = redis_schema.outbox_progress(stack_redis, loner.id)
    assert new_epoch != epoch and taken == 1


def _broadcast_when_connected(app, body):
    """``app.broadcast(body)``, or None while it is not connected to guestd yet."""
    try:
        return app.broadcast(body)
    except GroupError as exc:
        if exc.reason == "not-connected":
            return None
        raise
