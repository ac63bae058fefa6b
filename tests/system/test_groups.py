"""Server-group messaging on the whole system: real Nova with a real server group spread
over both fake computes, real Redis, one agent per host, and real qemu-ga + guestd guests
whose applications use the guestd client API (``broadcast``, ``send``, ``on_message``,
``on_result``).

What tests/integration/novaproxy/agent/test_group_relay.py proves on the same stack for
two members (every refusal reason, the group status, an application registering late,
a loner's garbage outbox) is not repeated here; this file proves what needs three members
on two hosts: messages crossing hosts both ways, refusals that stay with their sender
while the others keep exchanging, an agent killed with messages queued for its VMs, and
a hostile member of a group.
"""

import time
import uuid

import pytest

from guestd import group_protocol as gp
from guestd.client import GroupError
from harness.groups import (
    Member,
    apart,
    boot_members,
    delete_group,
    kill_agent,
    log_lines,
    outbox_json,
    server_group,
    wait_reported,
    write_outbox,
)
from harness.processes import wait_for
from novaproxy import flavor, groups, redis_schema

pytestmark = pytest.mark.system

HOSTILE_EPOCH = "feedfacefeedface"


@pytest.fixture(scope="module")
def messaging_flavor(stack):
    return stack.flavor(f"sys-messaging-{uuid.uuid4().hex[:6]}",
                        {flavor.GROUP_MESSAGING: "true", flavor.MONITORING: "true"})


@pytest.fixture
def apps():
    made = []
    yield made
    for app in made:
        app.stop()


@pytest.fixture
def stack_redis(stack):
    client = redis_schema.connect(stack.redis.url)
    yield client
    client.close()


@pytest.fixture
def trio(stack, messaging_flavor, apps):
    """Three members of a new server group, on both hosts: (group id, [Member, ...])."""
    gid = server_group(stack)
    members = boot_members(stack, messaging_flavor, gid)
    apps.extend(members)
    yield gid, members
    delete_group(stack, gid)  # its servers go after the test (tests/conftest.py)


def expect_accepted(member, seqs, recipients):
    """Every one of ``seqs`` was accepted for ``recipients`` (seq -> their uuids);
    the message ids, by seq."""
    results = member.told(seqs)
    assert {s: (results[s].status, set(results[s].members)) for s in seqs} == {
        s: (gp.ACCEPTED, set(recipients[s])) for s in seqs}
    return {s: results[s].message for s in seqs}


def test_three_members_on_two_hosts_exchange_broadcasts_and_unicasts_once_in_order(
        stack, trio, messaging_flavor, apps, stack_redis):
    gid, members = trio
    outside, _ = stack.boot("g-outside", messaging_flavor)
    outsider = Member(stack.guests[outside.id])
    apps.append(outsider)
    ids = [m.instance for m in members]
    sent: dict = {i: {} for i in ids}  # recipient -> sender -> bodies, in send order
    queued: dict = {m.instance: {} for m in members}  # sender -> seq -> its recipients
    for k in range(3):  # all at once, interleaved: each sender's order is what counts
        for sender in members:
            me, others = sender.instance, [i for i in ids if i != sender.instance]
            body = {"round": k, "from": outside.id}  # a "from" in the body is only data
            queued[me][sender.app.broadcast(body)] = others
            for to in others:
                queued[me][sender.app.send(to, [k, me, to])] = [to]
                sent[to].setdefault(me, []).append(body)
                sent[to][me].append([k, me, to])
    to_whom = {}  # message id -> its recipients
    for sender in members:
        seqs = queued[sender.instance]
        for seq, mid in expect_accepted(sender, list(seqs), seqs).items():
            to_whom[mid] = seqs[seq]
    # The outsider is in no group: refused, to its own application; nobody gets anything.
    refused = [outsider.app.broadcast("anyone?"), outsider.app.send(ids[0], "you?")]
    assert {(r.status, r.reason) for r in outsider.told(refused).values()} == {
        (gp.REFUSED, groups.NOT_IN_GROUP)}
    for member in members:
        member.got(sent[member.instance])
        assert all(m.group == gid for m in member.messages)
    for mid, recipients in to_whom.items():
        wait_reported(stack_redis, gid, [mid], dict.fromkeys(recipients, groups.DELIVERED))
    for sender in members:  # and each sender is told so, once per message
        seqs = queued[sender.instance]
        finals = sender.final(list(seqs))
        assert {s: (finals[s].status, finals[s].members) for s in seqs} == {
            s: (gp.DELIVERED, dict.fromkeys(seqs[s], groups.DELIVERED)) for s in seqs}
    # Every message delivered, so no retry is left: still once each, nothing to outsiders.
    for member in members:
        member.got(sent[member.instance])
    assert not outsider.messages


def test_refusals_stay_with_their_sender_while_the_other_host_keeps_exchanging(
        stack, trio):
    _, members = trio
    (flooder, neighbour), alone = apart(members)
    with pytest.raises(GroupError) as too_large:  # guestd refuses it at once
        flooder.app.broadcast("x" * gp.MAX_BODY)
    assert too_large.value.reason == gp.TOO_LARGE
    # As many as an outbox holds, at once: past the flooder's burst and refill.
    flood = [flooder.app.broadcast(n) for n in range(gp.MAX_OUTBOX)]
    # Meanwhile the member on the other host and the flooder's neighbour talk.
    chat = [alone.app.send(neighbour.instance, "ping"),
            neighbour.app.send(alone.instance, "pong")]
    results = flooder.told(flood)
    accepted = [s for s in flood if results[s].status == gp.ACCEPTED]
    refused = [s for s in flood if results[s].status == gp.REFUSED]
    assert len(accepted) >= groups.SENDER_BURST and refused
    assert {results[s].reason for s in refused} == {groups.RATE_LIMITED}
    bodies = [s - 1 for s in accepted]  # seq n carried body n - 1
    alone.got({flooder.instance: bodies, neighbour.instance: ["pong"]})
    neighbour.got({flooder.instance: bodies, alone.instance: ["ping"]})
    assert alone.told(chat[:1])[chat[0]].status == gp.ACCEPTED
    assert neighbour.told(chat[1:])[chat[1]].status == gp.ACCEPTED
    assert not flooder.messages


def test_an_agent_killed_with_messages_queued_loses_none_and_none_arrives_twice(
        stack, trio, stack_redis):
    gid, members = trio
    pair, alone = apart(members)
    host = pair[0].host
    ids = {m.instance for m in members}
    # A stream from the other host to the pair, killed in the middle of its delivery.
    stream = [alone.app.broadcast(n) for n in range(12)]
    first = expect_accepted(alone, stream, dict.fromkeys(stream, ids - {alone.instance}))
    wait_for(lambda: len(pair[0].messages) >= 2, 30, "the stream under way")
    kill_agent(stack, host)
    # While it is down: more for the pair (queued in their inboxes by the live agent),
    # and the pair's own messages (left in their outboxes).
    later = {alone.app.send(m.instance, f"while down to {m.instance}"): [m.instance]
             for m in pair}
    for seq, mid in expect_accepted(alone, list(later), later).items():
        # Its recipient's agent is gone: it waits, queued.
        assert redis_schema.report(stack_redis, gid, mid, time.time()) == {
            later[seq][0]: groups.PENDING}
    from_pair = {m.instance: [m.app.broadcast(f"{m.instance} {n}") for n in range(2)]
                 for m in pair}
    stack.restart_agent(host)
    for m in pair:
        other, = (p for p in pair if p is not m)
        m.got({alone.instance: list(range(12)) + [f"while down to {m.instance}"],
               other.instance: [f"{other.instance} {n}" for n in range(2)]})
    alone.got({m.instance: [f"{m.instance} {n}" for n in range(2)] for m in pair})
    for m in pair:  # each sender told once per entry, all accepted, then all delivered
        results = m.told(from_pair[m.instance])
        taken = [r for r in m.results if r.status in (gp.ACCEPTED, gp.REFUSED)]
        assert len(taken) == 2 and {r.status for r in results.values()} == {gp.ACCEPTED}
        finals = m.final(from_pair[m.instance])
        assert {r.status for r in finals.values()} == {gp.DELIVERED}
    for mid in first.values():
        wait_reported(stack_redis, gid, [mid],
                      {m.instance: groups.DELIVERED for m in pair})
    for m in pair:  # all delivered: nothing is tried again, still once each
        other, = (p for p in pair if p is not m)
        m.got({alone.instance: list(range(12)) + [f"while down to {m.instance}"],
               other.instance: [f"{other.instance} {n}" for n in range(2)]})


def test_a_hostile_outbox_costs_bounded_work_and_stops_no_one(stack, trio, stack_redis):
    _, members = trio
    pair, alone = apart(members)
    hostile, neighbour = pair
    guest, agent = stack.guests[hostile.instance], stack.agents[hostile.host]
    # What the agent logs of a bad outbox ("invalid" or "unreadable"), said once per lie.
    complaints = (agent.log_path, hostile.instance, "group messaging: outbox")
    seq = hostile.app.broadcast("honest")  # its own epoch, acknowledged
    expect_accepted(hostile, [seq], {seq: [neighbour.instance, alone.instance]})
    epoch = redis_schema.outbox_progress(stack_redis, hostile.instance)[0]
    wait_for(lambda: redis_schema.outbox_progress(stack_redis, hostile.instance)[2] == [],
             10, "the receipt taken")
    started = time.time()
    lies = [b"{not json" + bytes(range(256)),
            b"[" * 10_000,
            b"x" * (16 * gp.MAX_OUTBOX_BYTES),  # read no further than the bound
            outbox_json(epoch, [gp.message_entry(n, "db", "*", n) for n in (5, 4, 4)]),
            outbox_json(epoch, [gp.message_entry(9, "db", "*", "y" * gp.MAX_BODY)]),
            outbox_json(epoch, [gp.message_entry(n, "db", "*", n)
                                for n in range(9, 10 + gp.MAX_OUTBOX)])]
    said = log_lines(*complaints)
    for n, lie in enumerate(lies, 1):
        write_outbox(guest, lie)
        wait_for(lambda n=n: log_lines(*complaints) >= said + n, 20, f"lie {n} refused")
        # Meanwhile the other members keep talking, across hosts.
        chat = [alone.app.send(neighbour.instance, f"ping {n}"),
                neighbour.app.send(alone.instance, f"pong {n}")]
        alone.told(chat[:1])
        neighbour.told(chat[1:])
    pings = [f"ping {n}" for n in range(1, len(lies) + 1)]
    pongs = [f"pong {n}" for n in range(1, len(lies) + 1)]
    # A sender named in the outbox is dropped: the host says who sent it.
    write_outbox(guest, outbox_json(HOSTILE_EPOCH, [
        {**gp.message_entry(1, "db", "*", "forged"), "from": alone.instance}]))
    neighbour.got({hostile.instance: ["honest", "forged"], alone.instance: pings})
    # The same seq again, changed, and a new one: only the new one is taken.
    write_outbox(guest, outbox_json(HOSTILE_EPOCH, [gp.message_entry(1, "db", "*", "again"),
                                                    gp.message_entry(2, "db", "*", "new")]))
    alone.got({hostile.instance: ["honest", "forged", "new"], neighbour.instance: pongs})
    # Its guestd's next write puts its own outbox back: its application sends again.
    seq = hostile.app.broadcast("back")
    expect_accepted(hostile, [seq], {seq: [neighbour.instance, alone.instance]})
    neighbour.got({hostile.instance: ["honest", "forged", "new", "back"],
                   alone.instance: pings})
    alone.got({hostile.instance: ["honest", "forged", "new", "back"],
               neighbour.instance: pongs})
    assert log_lines(*complaints) == said + len(lies)  # once per lie, not once per poll
    assert agent is stack.agents[hostile.host] and agent.alive() and guest.guestd.alive()
    # The agent kept pinging every guest on that host, the hostile one included.
    for m in pair:
        view = stack.wait_settled(m.instance)
        assert float(view["last_answer"]) > started
