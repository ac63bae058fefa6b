"""Peer notices through the inbox relay on a real redis-server, the guests' replies
chosen by the test: a recipient that was away gets the latest state per peer, in
order with its messages, and a notice it did not take waits for it."""

import json
import uuid

from guestd import protocol
from novaproxy import groups, redis_schema, replies
from novaproxy.agent import group_inbox
from novaproxy.redis_schema import peers as peer_keys

A, B, C = (str(uuid.UUID(int=n)) for n in (21, 22, 23))


class Guests:
    """What the guests answer: ``outcomes`` in turn, then accept; an accept names the
    application that took it (one naming nobody is not delivered)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.asked = []

    def deliver(self, req, timeout):
        self.asked.append(req)
        outcome = self.outcomes.pop(0) if self.outcomes else "accept"
        voters = [protocol.voter("app", outcome)] if outcome == "accept" else []
        return replies.Reply(req["id"], req["instance"], outcome, voters=voters)


def direct(fn, *args):
    fn(*args)


def relay(client, guests):
    redis_schema.cache_member(client, groups.Member(B, known=True, messaging=True))
    return group_inbox.InboxRelay(client, "h1", guests.deliver, lambda: {B}, direct,
                                  lambda: redis_schema.redis_time(client), None)


def keep(client, peer, seq, state):
    peer_keys.keep_notice(client, B, {"peer": peer, "name": "", "state": state, "cause": "",
                                      "since": float(seq), "seq": seq})


def message(client, seq):
    now = redis_schema.redis_time(client)
    redis_schema.append_message(client, B, {
        "id": uuid.uuid4().hex, "from": A, "group": "g", "to": "*",
        "epoch": "0123456789abcdef", "seq": seq, "body": json.dumps(seq), "sent_at": now,
        "expires": now + 60})


def told(guests):
    return [(r["phase"], r["details"].get("state") or r["details"]["body"])
            for r in guests.asked]


def test_a_recipient_away_gets_the_latest_state_per_peer_not_a_backlog(redis_client):
    for seq, state in enumerate(("suspect", "failed", "recovering", "healthy"), 1):
        keep(redis_client, A, seq, state)
    keep(redis_client, C, 1, "reboot prepared")
    message(redis_client, 1)
    guests = Guests()
    assert relay(redis_client, guests).round(None)
    # Oldest change first (C's since 1.0, A's latest since 4.0), then the message.
    assert told(guests) == [(protocol.PEER, "reboot prepared"), (protocol.PEER, "healthy"),
                            (protocol.MESSAGE, 1)]
    assert all(r["event"] == protocol.GROUP for r in guests.asked)
    assert peer_keys.waiting_notices(redis_client, B) == []
    # Told again only when something new happens.
    keep(redis_client, C, 2, "reboot ended")
    again = Guests()
    relay(redis_client, again).round(None)
    assert told(again) == [(protocol.PEER, "reboot ended")]


def test_a_notice_not_taken_waits_and_is_replaced_by_a_newer_one(redis_client):
    keep(redis_client, A, 1, "failed")
    message(redis_client, 1)
    guests = Guests(replies.UNREACHABLE)
    first = relay(redis_client, guests)
    first.round(None)
    assert told(guests) == [(protocol.PEER, "failed")]  # and the message waits behind it
    keep(redis_client, A, 2, "recovering")
    again = Guests()
    relay(redis_client, again).round(None)  # another round (a restarted agent)
    assert told(again) == [(protocol.PEER, "recovering"), (protocol.MESSAGE, 1)]
