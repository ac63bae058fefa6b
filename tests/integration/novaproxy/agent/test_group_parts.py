"""The relay's parts on a real redis-server and a real qemu-ga guest, with Nova's
answers and the guests' replies chosen by the test: what happens when a receipt or
a message does not arrive, when Nova cannot be read, when a rate is spent, and when
an agent restarts in the middle."""

import json
import os
import threading
import time
import uuid

import pytest

from guestd import group_protocol as gp
from guestd import protocol
from harness.processes import wait_for
from novaproxy import flavor, groups, redis_schema, replies
from novaproxy.agent import group_inbox, group_outbox, group_send, hypervisor, membership
from novaproxy.agent.nova import NovaUnavailable

GID, EPOCH = "g-parts", "0123456789abcdef"
A, B, C = (str(uuid.UUID(int=n)) for n in (11, 12, 13))


class Directory:
    """Nova's answers: every server takes messages, all in one group unless removed."""

    def __init__(self, members=(A, B)):
        self.members = list(members)
        self.down = False
        self.deleted: set = set()

    def _check(self):
        if self.down:
            raise NovaUnavailable("GET", 503, "down for the test")

    def server_with_groups(self, instance):
        self._check()
        if instance in self.deleted:
            return None
        return {"id": instance, "status": "ACTIVE", "OS-EXT-SRV-ATTR:host": "h1",
                "flavor": {"extra_specs": {flavor.GROUP_MESSAGING: "true"}}, "metadata": {},
                "server_groups": [GID] if instance in self.members else []}

    def server_group(self, gid):
        self._check()
        return {"id": gid, "name": "parts", "policy": "affinity", "members": self.members}


# guestd's answer to a message nobody in the guest takes yet: accept, naming no voter.
NOBODY = "accept-nobody"


class Guests:
    """What the guests answer: ``outcomes`` in turn, then accept (an application took it)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.asked = []

    def deliver(self, req, timeout):
        self.asked.append(req)
        outcome = self.outcomes.pop(0) if self.outcomes else protocol.ACCEPT
        if outcome == NOBODY:
            return replies.Reply(req["id"], req["instance"], protocol.ACCEPT)
        voters = [protocol.voter("db", protocol.ACCEPT)] if outcome == protocol.ACCEPT else []
        return replies.Reply(req["id"], req["instance"], outcome, voters=voters)


def direct(fn, *args):
    fn(*args)


@pytest.fixture
def sender_guest(make_guest):
    return make_guest(A)


def poller(client, nova, guests, guest):
    members = membership.Membership(client, nova)
    sender = group_send.Sender(client, members, lambda: redis_schema.redis_time(client))
    return group_outbox.OutboxPoller(
        client, hypervisor.QgaSocketDirectory(os.path.dirname(guest.qga_socket)), members,
        sender, guests.deliver, lambda: {A}, direct,
        os.path.join(guest.workdir, "outbox.json"), None)


def write_outbox(guest, seqs, epoch=EPOCH):
    path = os.path.join(guest.workdir, "outbox.json")
    with open(path, "w") as f:
        json.dump({"v": 1, "epoch": epoch, "messages": [
            {"seq": n, "kind": "message", "to": "*", "app": "db", "body": n} for n in seqs]}, f)


def inbox(client, instance):
    return [int(f["seq"]) for _, f in client.xrange(redis_schema.inbox_key(instance))]


def test_a_lost_receipt_is_sent_again_and_nothing_is_taken_twice(redis_client, sender_guest):
    guests = Guests(replies.TIMEOUT)
    poll = poller(redis_client, Directory(), guests, sender_guest)
    write_outbox(sender_guest, [1, 2])
    poll.poll(A)
    assert inbox(redis_client, B) == [1, 2]
    epoch, taken, pending = redis_schema.outbox_progress(redis_client, A)
    assert (epoch, taken, [p["acked"] for p in pending]) == (EPOCH, 2, [2])
    # The outbox still holds them: the same receipt again, before anything new.
    write_outbox(sender_guest, [1, 2, 3])
    poll.poll(A)
    assert [r["id"] for r in guests.asked] == [f"rcpt-{EPOCH}-2"] * 2 + [f"rcpt-{EPOCH}-3"]
    assert guests.asked[0]["details"] == guests.asked[1]["details"]
    assert inbox(redis_client, B) == [1, 2, 3]
    assert redis_schema.outbox_progress(redis_client, A) == (EPOCH, 3, [])
    poll.poll(A)  # guestd has not dropped them yet: nothing new, nothing sent
    assert len(guests.asked) == 3 and inbox(redis_client, B) == [1, 2, 3]


def test_a_guest_that_does_not_take_its_receipt_gets_nothing_new_taken(
        redis_client, sender_guest):
    guests = Guests(replies.UNREACHABLE, replies.UNREACHABLE)
    poll = poller(redis_client, Directory(), guests, sender_guest)
    write_outbox(sender_guest, [1])
    poll.poll(A)
    write_outbox(sender_guest, [1, 2])
    poll.poll(A)  # the receipt fails again: 2 stays in the outbox
    assert inbox(redis_client, B) == [1]
    assert redis_schema.outbox_progress(redis_client, A)[1] == 1
    write_outbox(sender_guest, [2])  # guestd had the receipt after all: 1 is dropped
    poll.poll(A)
    assert inbox(redis_client, B) == [1, 2]


def test_nova_unreadable_takes_nothing_until_it_answers(redis_client, sender_guest):
    nova, guests = Directory(), Guests()
    nova.down = True
    poll = poller(redis_client, nova, guests, sender_guest)
    write_outbox(sender_guest, [1])
    with pytest.raises(NovaUnavailable):
        poll.poll(A)
    assert redis_schema.outbox_progress(redis_client, A) == ("", 0, [])
    assert guests.asked == [] and inbox(redis_client, B) == []
    nova.down = False
    poll.poll(A)
    assert inbox(redis_client, B) == [1]


def test_the_sender_rate_refuses_past_its_burst_and_a_poll_takes_max_taken(
        redis_client, sender_guest):
    guests = Guests()
    poll = poller(redis_client, Directory(), guests, sender_guest)
    write_outbox(sender_guest, range(1, 31))
    poll.poll(A)
    assert redis_schema.outbox_progress(redis_client, A)[1] == groups.MAX_TAKEN
    poll.poll(A)
    results = [r for req in guests.asked for r in req["details"]["results"]]
    assert [r["seq"] for r in results] == list(range(1, 31))
    accepted = [r["seq"] for r in results if r["status"] == gp.ACCEPTED]
    assert groups.SENDER_BURST <= len(accepted) < groups.SENDER_BURST + 3  # a refill, at most
    assert {r["reason"] for r in results if r["status"] == gp.REFUSED} == {
        groups.RATE_LIMITED}
    assert inbox(redis_client, B) == accepted


def test_a_member_that_joined_since_the_cache_is_found_in_nova(redis_client, sender_guest):
    nova, guests = Directory(), Guests()
    poll = poller(redis_client, nova, guests, sender_guest)
    write_outbox(sender_guest, [1])
    poll.poll(A)  # caches the group of A and B
    nova.members.append(C)
    path = os.path.join(sender_guest.workdir, "outbox.json")
    with open(path, "w") as f:
        json.dump({"v": 1, "epoch": EPOCH, "messages": [
            {"seq": 2, "kind": "message", "to": C, "app": "db", "body": "new"}]}, f)
    poll.poll(A)
    assert guests.asked[-1]["details"]["results"][0]["members"] == {C: groups.PENDING}
    assert inbox(redis_client, C) == [2]


def test_a_member_booted_after_its_group_was_cached_gets_the_next_broadcast(
        redis_client, sender_guest):
    nova, guests = Directory(), Guests()
    poll = poller(redis_client, nova, guests, sender_guest)
    write_outbox(sender_guest, [1])
    poll.poll(A)  # caches the group of A and B
    nova.members.append(C)  # C boots into the group; its agent's first poll reads it
    membership.Membership(redis_client, nova).member(C)
    write_outbox(sender_guest, [1, 2])
    poll.poll(A)
    assert guests.asked[-1]["details"]["results"][-1]["members"] == {
        B: groups.PENDING, C: groups.PENDING}
    assert inbox(redis_client, C) == [2]


def test_a_member_deleted_stops_being_a_recipient_as_it_leaves_its_host(
        redis_client, sender_guest):
    nova, guests = Directory(), Guests()
    served = {A, B}
    members = membership.Membership(redis_client, nova)
    stopping = threading.Event()
    poller = group_outbox.OutboxPoller(
        redis_client, hypervisor.QgaSocketDirectory(os.path.dirname(sender_guest.qga_socket)),
        members, group_send.Sender(redis_client, members,
                                   lambda: redis_schema.redis_time(redis_client)),
        guests.deliver, lambda: set(served), direct,
        os.path.join(sender_guest.workdir, "outbox.json"), stopping)
    threading.Thread(target=poller.run, daemon=True).start()
    try:
        wait_for(lambda: redis_schema.cached_member(redis_client, B) is not None, 5,
                 "B read as it is served")
        nova.deleted.add(B)
        served.discard(B)  # its domain went with it: read again at once, not in 30 s
        wait_for(lambda: not redis_schema.cached_member(redis_client, B).known, 5,
                 "B known as deleted")
        write_outbox(sender_guest, [1])
        wait_for(lambda: guests.asked, 5, "A's receipt")
        assert guests.asked[-1]["details"]["results"][0]["members"] == {}
        assert inbox(redis_client, B) == []
    finally:
        stopping.set()


def test_each_message_s_end_is_reported_to_its_sender_delivered_or_expired(
        redis_client, sender_guest):
    nova, guests = Directory(), Guests()
    members = membership.Membership(redis_client, nova)
    now = lambda: redis_schema.redis_time(redis_client)  # noqa: E731
    sent_long_ago = group_send.Sender(redis_client, members,
                                      lambda: now() - 2 * groups.MESSAGE_TTL)
    poll = group_outbox.OutboxPoller(
        redis_client, hypervisor.QgaSocketDirectory(os.path.dirname(sender_guest.qga_socket)),
        members, sent_long_ago, guests.deliver, lambda: {A}, direct,
        os.path.join(sender_guest.workdir, "outbox.json"), None, now)
    write_outbox(sender_guest, [1, 2])
    poll.poll(A)
    first, second = guests.asked[-1]["details"]["results"]
    redis_schema.mark_report(redis_client, GID, first["message"], B, groups.DELIVERED)
    poll.deliver_reports([A])
    reports = [r for r in guests.asked if r["phase"] == protocol.REPORT]
    assert [(r["id"], r["instance"], r["details"]) for r in reports] == [
        (f"rpt-{first['message']}", A, gp.report_details(first["message"], GID,
                                                          {B: groups.DELIVERED})),
        (f"rpt-{second['message']}", A, gp.report_details(second["message"], GID,
                                                           {B: groups.EXPIRED}))]
    assert redis_schema.open_reports(redis_client, [A]) == {}
    poll.deliver_reports([A])  # each told once
    assert len([r for r in guests.asked if r["phase"] == protocol.REPORT]) == 2


def test_a_final_report_waits_for_every_recipient_and_for_a_guest_that_answers(
        redis_client, sender_guest):
    nova, guests = Directory(members=(A, B, C)), Guests()
    poll = poller(redis_client, nova, guests, sender_guest)
    write_outbox(sender_guest, [1])
    poll.poll(A)
    mid = guests.asked[-1]["details"]["results"][0]["message"]
    redis_schema.mark_report(redis_client, GID, mid, B, groups.DELIVERED)
    poll.deliver_reports([A])  # C is still pending: nothing to report
    assert [r for r in guests.asked if r["phase"] == protocol.REPORT] == []
    redis_schema.mark_report(redis_client, GID, mid, C, groups.DELIVERED)
    guests.outcomes = [replies.TIMEOUT]
    poll.deliver_reports([A])  # the guest does not answer: owed still
    assert redis_schema.open_reports(redis_client, [A])
    poll.deliver_reports([A])
    assert guests.asked[-1]["details"]["members"] == {B: groups.DELIVERED,
                                                      C: groups.DELIVERED}
    assert redis_schema.open_reports(redis_client, [A]) == {}


# -- the inbox relay ---------------------------------------------------------------------------


def queue(client, recipient, seq, ttl=60.0):
    now = redis_schema.redis_time(client)
    mid = uuid.uuid4().hex
    redis_schema.open_report(client, GID, mid, [recipient], now + ttl)
    redis_schema.append_message(client, recipient, {
        "id": mid, "from": A, "group": GID, "to": "*", "epoch": EPOCH, "seq": seq,
        "body": json.dumps({"n": seq}), "sent_at": now, "expires": now + ttl})
    return mid


def relay(client, guests):
    membership.Membership(client, Directory()).member(B)  # as the outbox poller caches it
    return group_inbox.InboxRelay(client, "h1", guests.deliver, lambda: {B}, direct,
                                  lambda: redis_schema.redis_time(client), None)


def test_only_vms_the_membership_cache_knows_to_take_messages_are_read(redis_client):
    queue(redis_client, B, 1)
    relayed = group_inbox.InboxRelay(redis_client, "h1", Guests().deliver, lambda: {B}, direct,
                                     lambda: redis_schema.redis_time(redis_client), None)
    assert not relayed.round(None)  # not cached yet: not read, Nova not asked
    redis_schema.cache_member(redis_client, groups.Member(B, known=True, messaging=False))
    assert not relayed.round(None)
    redis_schema.cache_member(redis_client, groups.Member(B, known=True, messaging=True))
    assert relayed.round(None)


def test_messages_are_delivered_in_order_and_reported(redis_client):
    mids = [queue(redis_client, B, n) for n in (1, 2, 3)]
    guests = Guests()
    assert relay(redis_client, guests).round(None)
    assert [(r["id"], r["details"]["body"]) for r in guests.asked] == [
        (f"msg-{m}", {"n": n}) for m, n in zip(mids, (1, 2, 3))]
    last = redis_client.xrevrange(redis_schema.inbox_key(B), count=1)[0][0]
    assert redis_schema.inbox_positions(redis_client, [B]) == {B: last}
    for mid in mids:
        assert redis_schema.report(redis_client, GID, mid, 0) == {B: groups.DELIVERED}


def test_an_undelivered_message_waits_and_a_restarted_agent_delivers_from_there(redis_client):
    mids = [queue(redis_client, B, n) for n in (1, 2, 3)]
    guests = Guests("accept", replies.UNREACHABLE)
    first = relay(redis_client, guests)
    first.round(None)
    assert len(guests.asked) == 2
    assert redis_schema.report(redis_client, GID, mids[1], 0) == {B: groups.PENDING}
    assert not first.round(None)  # B waits for RETRY: nothing to read
    again = Guests()
    relay(redis_client, again).round(None)  # a restarted agent
    assert [r["id"] for r in again.asked] == [f"msg-{m}" for m in mids[1:]]


def test_a_message_nobody_in_the_guest_takes_yet_stays_queued_and_is_delivered_again(
        redis_client, monkeypatch):
    monkeypatch.setattr(group_inbox, "RETRY", 0.2)
    mid = queue(redis_client, B, 1)
    guests = Guests(NOBODY)
    relayed = relay(redis_client, guests)
    relayed.round(None)
    assert [r["id"] for r in guests.asked] == [f"msg-{mid}"]
    assert redis_schema.report(redis_client, GID, mid, 0) == {B: groups.PENDING}
    assert redis_schema.inbox_positions(redis_client, [B]) == {B: "0-0"}
    assert not relayed.round(None)  # B waits for RETRY
    time.sleep(0.25)
    assert relayed.round(None)
    assert [r["id"] for r in guests.asked] == [f"msg-{mid}"] * 2  # the same request id
    assert redis_schema.report(redis_client, GID, mid, 0) == {B: groups.DELIVERED}


def test_a_message_guestd_already_handed_out_under_another_id_counts_as_delivered(
        redis_client):
    mid = queue(redis_client, B, 1)
    relay(redis_client, Guests(protocol.REJECT)).round(None)
    assert redis_schema.report(redis_client, GID, mid, 0) == {B: groups.DELIVERED}


def test_an_expired_message_is_not_delivered_but_reported(redis_client):
    old = queue(redis_client, B, 1, ttl=-1.0)
    new = queue(redis_client, B, 2)
    guests = Guests()
    relay(redis_client, guests).round(None)
    assert [r["id"] for r in guests.asked] == [f"msg-{new}"]
    assert redis_schema.report(redis_client, GID, old, 0) == {B: groups.EXPIRED}


def test_a_blocking_round_wakes_for_a_new_message(redis_client):
    guests = Guests()
    relayed = relay(redis_client, guests)
    queue(redis_client, B, 1)
    relayed.round(None)
    started = time.monotonic()
    assert relayed.round(200)  # nothing new: waits its block, then returns
    assert time.monotonic() - started >= 0.15 and len(guests.asked) == 1
