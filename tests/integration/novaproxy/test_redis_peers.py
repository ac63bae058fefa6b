"""Peer state notices on a real redis-server: coalescing per recipient, the inbox
wake-up, delivered notices forgotten unless replaced, the liveness key and the claim
that makes one agent announce a member unreachable, and the Notifier end to end."""

import threading
import time
import uuid

from novaproxy import peer_notify, redis_schema
from novaproxy.groups import Group, Member
from novaproxy.redis_schema import peers as peer_keys

A, B, C = (str(uuid.UUID(int=i)) for i in range(1, 4))


def notice(peer, seq, state="failed"):
    return {"peer": peer, "name": "", "state": state, "cause": "", "since": float(seq),
            "seq": seq}


def inbox_len(client, instance):
    return client.xlen(redis_schema.inbox_key(instance))


def test_only_the_latest_notice_per_peer_waits(redis_client):
    assert peer_keys.keep_notice(redis_client, B, notice(A, 1, "suspect"))
    assert peer_keys.keep_notice(redis_client, B, notice(A, 3, "failed"))
    assert not peer_keys.keep_notice(redis_client, B, notice(A, 2, "recovering"))  # late
    assert peer_keys.keep_notice(redis_client, B, notice(C, 1, "stopped"))
    waiting = peer_keys.waiting_notices(redis_client, B)
    assert [(n["peer"], n["state"]) for _, n in waiting] == [(C, "stopped"), (A, "failed")]
    # One wake-up for all of them: the relay drains the whole hash on it.
    entries = redis_client.xrange(redis_schema.inbox_key(B))
    assert [fields for _, fields in entries] == [peer_keys.WAKE]
    assert peer_keys.is_wake(entries[0][1])
    assert redis_client.ttl(peer_keys.peers_key(B)) > 0


def test_a_delivered_notice_goes_unless_a_newer_one_replaced_it(redis_client):
    peer_keys.keep_notice(redis_client, B, notice(A, 1))
    peer_keys.keep_notice(redis_client, B, notice(C, 1))
    (raw_c, n_c), (raw_a, n_a) = sorted(peer_keys.waiting_notices(redis_client, B),
                                        key=lambda item: item[1]["peer"], reverse=True)
    peer_keys.keep_notice(redis_client, B, notice(A, 2, "healthy"))  # while delivering
    peer_keys.delivered(redis_client, B, raw_a, n_a)
    peer_keys.delivered(redis_client, B, raw_c, n_c)
    assert [n["state"] for _, n in peer_keys.waiting_notices(redis_client, B)] == ["healthy"]
    # Emptied, the next notice wakes the relay again.
    raw, n = peer_keys.waiting_notices(redis_client, B)[0]
    peer_keys.delivered(redis_client, B, raw, n)
    assert peer_keys.waiting_notices(redis_client, B) == []
    peer_keys.keep_notice(redis_client, B, notice(A, 3))
    assert inbox_len(redis_client, B) == 2


def test_seq_grows_per_peer_whoever_publishes(redis_client):
    assert [peer_keys.next_seq(redis_client, A) for _ in range(3)] == [1, 2, 3]
    assert peer_keys.next_seq(redis_client, B) == 1


def test_a_host_whose_liveness_key_expired_is_lost_and_claimed_once(redis_client):
    peer_keys.announce_alive(redis_client, "h1", "run-1")
    peer_keys.announce_alive(redis_client, "h2", "run-2")
    assert peer_keys.lost_hosts(redis_client, "h1") == {}
    redis_client.pexpire(peer_keys.alive_key("h2"), 1)
    time.sleep(0.05)
    assert peer_keys.lost_hosts(redis_client, "h1") == {"h2": "run-2"}
    assert peer_keys.lost_hosts(redis_client, "h2") == {}  # a host never counts itself
    # Several agents race to announce one member: one wins.
    wins = []
    threads = [threading.Thread(target=lambda: wins.append(
        peer_keys.claim_unreachable(redis_client, A, "run-2"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    # The host's next run, lost again, is announced again.
    assert peer_keys.claim_unreachable(redis_client, A, "run-3")


def cache(client, group, messaging=(A, B, C)):
    redis_schema.cache_group(client, group)
    for m in group.members:
        redis_schema.cache_member(client, Member(m, True, m in messaging, "ACTIVE", "h",
                                                 group.gid, name=f"vm-{m[-1]}"))


def test_the_notifier_tells_the_members_that_take_messages(redis_client):
    cache(redis_client, Group("g", "db", "affinity", (A, B, C)), messaging=(A, B))
    notifier = peer_notify.Notifier(redis_client, peer_notify.CachedMembership(redis_client),
                                    lambda: 1000.0)
    assert notifier.publish(A, "failed", "hung", at=time.monotonic()) == [B]
    [(_, n)] = peer_keys.waiting_notices(redis_client, B)
    assert (n["peer"], n["name"], n["state"], n["cause"], n["seq"]) == (
        A, "vm-1", "failed", "hung", 1)
    assert 999.0 < n["since"] <= 1000.0
    assert peer_keys.waiting_notices(redis_client, C) == []
    # Not cached: told to nobody (the proxy has no Nova reads of its own).
    assert notifier.publish(str(uuid.UUID(int=7)), "failed") == []


def test_notify_never_blocks_and_publishes_in_the_background(redis_client):
    cache(redis_client, Group("g", "db", "affinity", (A, B)))
    notifier = peer_notify.Notifier(redis_client, peer_notify.CachedMembership(redis_client),
                                    lambda: 1000.0)
    notifier.notify(A, "reboot prepared")
    deadline = time.monotonic() + 5
    while not peer_keys.waiting_notices(redis_client, B) and time.monotonic() < deadline:
        time.sleep(0.02)
    [(_, n)] = peer_keys.waiting_notices(redis_client, B)
    assert n["state"] == "reboot prepared"


class SlowMembership(peer_notify.CachedMembership):
    """The cache, read only once ``go`` is set: Nova (or Redis) being slow."""

    def __init__(self, client):
        super().__init__(client)
        self.go = threading.Event()
        self.asked = []

    def member(self, instance):
        self.asked.append(instance)
        self.go.wait(5)
        return super().member(instance)


def test_a_full_backlog_drops_notices_and_the_caller_never_waits(redis_client):
    cache(redis_client, Group("g", "db", "affinity", (A, B, C)))
    slow = SlowMembership(redis_client)
    notifier = peer_notify.Notifier(redis_client, slow, lambda: 1000.0, backlog=1)
    started = time.monotonic()
    notifier.notify(A, "failed")  # taken by the thread, which waits on the membership
    deadline = time.monotonic() + 5
    while not slow.asked and time.monotonic() < deadline:
        time.sleep(0.01)
    notifier.notify(B, "failed")  # waits in the backlog
    notifier.notify(C, "failed")  # dropped, logged
    assert time.monotonic() - started < 1.0
    slow.go.set()
    deadline = time.monotonic() + 5
    while len(slow.asked) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert slow.asked == [A, B]
