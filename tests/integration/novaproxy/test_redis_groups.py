"""Server-group messaging's Redis keys on a real redis-server: the rate buckets (one
atomic script), inbox bounds and expiry, positions, outbox progress, reports, caches."""

import json
import threading
import uuid

from novaproxy import groups, redis_schema
from novaproxy.groups import Group, Member

G, A, B = "g-1", str(uuid.UUID(int=1)), str(uuid.UUID(int=2))


def take(client, now, sender=A, **rates):
    return redis_schema.take_tokens(client, G, sender, now, **rates)


def test_a_sender_gets_its_burst_then_its_rate(redis_client):
    t = 1000.0
    results = [take(redis_client, t) for _ in range(groups.SENDER_BURST + 1)]
    assert results == [redis_schema.RATE_OK] * groups.SENDER_BURST + ["sender"]
    # 0.1 s at 10/s gives one token back, and only one.
    assert take(redis_client, t + 0.1) == redis_schema.RATE_OK
    assert take(redis_client, t + 0.1) == "sender"
    # Another sender of the group has its own bucket.
    assert take(redis_client, t + 0.1, sender=B) == redis_schema.RATE_OK
    # A refill never goes over the burst.
    later = [take(redis_client, t + 3600) for _ in range(groups.SENDER_BURST + 1)]
    assert later.count(redis_schema.RATE_OK) == groups.SENDER_BURST


def test_nothing_is_taken_unless_both_buckets_allow(redis_client):
    t = 1000.0
    rates = {"sender_rate": 0.001, "sender_burst": 5, "group_rate": 1.0, "group_burst": 3}
    assert [take(redis_client, t, **rates) for _ in range(4)] == ["ok", "ok", "ok", "group"]
    # The group's refusal took nothing from the sender: it has 2 left for a refilled group.
    assert [take(redis_client, t + 3, **rates) for _ in range(3)] == ["ok", "ok", "sender"]
    # The sender's refusal took nothing from the group: its last token goes to another.
    assert take(redis_client, t + 3, sender=B, **rates) == "ok"
    assert take(redis_client, t + 3, sender=B, **rates) == "group"
    assert float(redis_client.hget(redis_schema.group_bucket_key(G), "tokens")) == 0.0
    assert 0 < redis_client.ttl(redis_schema.group_bucket_key(G)) <= 4


def test_concurrent_senders_never_take_more_than_the_group_burst(redis_server):
    results = []
    rates = {"sender_rate": 1.0, "sender_burst": 100, "group_rate": 0.001, "group_burst": 10}

    def send(sender):
        client = redis_schema.connect(redis_server.url)
        results.extend(take(client, 1000.0, sender=sender, **rates) for _ in range(5))

    redis_schema.connect(redis_server.url).flushdb()
    threads = [threading.Thread(target=send, args=(f"s{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 10 and results.count("group") == 20


def fields(n, expires=2000.0):
    return {"id": uuid.uuid4().hex, "from": A, "group": G, "to": "*", "epoch": "0" * 16,
            "seq": n, "body": "{}", "sent_at": 1000.0, "expires": expires}


def test_an_inbox_is_read_from_its_position_and_bounded(redis_client):
    ids = [redis_schema.append_message(redis_client, B, fields(n)) for n in range(1, 6)]
    assert redis_schema.inbox_positions(redis_client, [B, A]) == {B: "0-0", A: "0-0"}
    read = redis_schema.read_inboxes(redis_client, {B: "0-0", A: "0-0"}, None, 3)
    assert list(read) == [B] and [e for e, _ in read[B]] == ids[:3]
    assert read[B][0][1]["seq"] == "1"
    redis_schema.set_inbox_position(redis_client, B, ids[2])
    positions = redis_schema.inbox_positions(redis_client, [B])
    assert positions == {B: ids[2]}
    assert [e for e, _ in redis_schema.read_inboxes(redis_client, positions, None, 10)[B]] \
        == ids[3:]
    assert 0 < redis_client.ttl(redis_schema.inbox_pos_key(B)) <= redis_schema.INBOX_TTL
    assert 0 < redis_client.ttl(redis_schema.inbox_key(B)) <= redis_schema.INBOX_TTL


def test_an_inbox_drops_its_oldest_past_its_bound(redis_client):
    for n in range(1, 1001):
        redis_schema.append_message(redis_client, B, fields(n), maxlen=100)
    length = redis_client.xlen(redis_schema.inbox_key(B))
    assert 100 <= length < 300  # approximate trimming: whole nodes go
    first = redis_schema.read_inboxes(redis_client, {B: "0-0"}, None, 1)[B][0][1]
    assert int(first["seq"]) > 1 and redis_client.xrevrange(
        redis_schema.inbox_key(B), count=1)[0][1]["seq"] == "1000"


def test_an_inbox_without_news_goes_away_with_its_ttl(redis_client):
    redis_schema.append_message(redis_client, B, fields(1))
    redis_client.pexpire(redis_schema.inbox_key(B), 50)
    redis_schema.set_inbox_position(redis_client, B, "1-0")
    redis_client.pexpire(redis_schema.inbox_pos_key(B), 50)
    threading.Event().wait(0.1)
    assert redis_schema.read_inboxes(redis_client, {B: "0-0"}, None, 10) == {}
    assert redis_schema.inbox_positions(redis_client, [B]) == {B: "0-0"}


def test_a_blocking_read_wakes_for_a_new_message(redis_server, redis_client):
    got = []
    reader = threading.Thread(target=lambda: got.append(redis_schema.read_inboxes(
        redis_schema.connect(redis_server.url), {A: "$", B: "$"}, 3000, 10)))
    reader.start()
    threading.Event().wait(0.2)
    redis_schema.append_message(redis_client, B, fields(7))
    reader.join(5)
    assert list(got[0]) == [B] and got[0][B][0][1]["seq"] == "7"


def test_a_blocking_read_is_woken_for_its_host_only(redis_server, redis_client):
    got = []
    reader = threading.Thread(target=lambda: got.append(redis_schema.read_inboxes(
        redis_schema.connect(redis_server.url, socket_timeout=30), {A: "$"}, 20_000, 10,
        "h1")))
    reader.start()
    threading.Event().wait(0.2)
    redis_schema.wake_inbox_reader(redis_client, "h2")  # another host's relay
    reader.join(0.5)
    assert reader.is_alive()
    redis_schema.wake_inbox_reader(redis_client, "h1")
    reader.join(5)  # long before its 20 s block
    assert not reader.is_alive() and got == [{}]


def test_outbox_progress_and_receipts_pending(redis_client):
    assert redis_schema.outbox_progress(redis_client, A) == ("", 0, [])
    receipt = {"epoch": "a" * 16, "acked": 3, "results": []}
    redis_schema.set_outbox_progress(redis_client, A, "a" * 16, 3, [receipt])
    assert redis_schema.outbox_progress(redis_client, A) == ("a" * 16, 3, [receipt])
    assert 0 < redis_client.ttl(redis_schema.outbox_key(A)) <= redis_schema.OUTBOX_TTL


def test_a_report_expires_its_pending_members(redis_client):
    mid = uuid.uuid4().hex
    redis_schema.open_report(redis_client, G, mid, [A, B], expires=1060.0)
    redis_schema.mark_report(redis_client, G, mid, A, groups.DELIVERED)
    redis_schema.mark_report(redis_client, G, mid, "stranger", groups.DELIVERED)
    assert redis_schema.report(redis_client, G, mid, 1001.0) == {
        A: groups.DELIVERED, B: groups.PENDING}
    assert redis_schema.report(redis_client, G, mid, 1061.0) == {
        A: groups.DELIVERED, B: groups.EXPIRED}
    assert 0 < redis_client.ttl(redis_schema.report_key(G, mid)) <= redis_schema.REPORT_TTL
    redis_schema.mark_report(redis_client, G, "gone", A, groups.DELIVERED)
    assert not redis_client.exists(redis_schema.report_key(G, "gone"))


def test_memberships_are_cached_for_group_ttl(redis_client):
    member = Member(A, known=True, messaging=True, status="ACTIVE", host="c1", group=G)
    group = Group(G, "pair", "anti-affinity", (A, B))
    redis_schema.cache_member(redis_client, member)
    redis_schema.cache_group(redis_client, group)
    assert redis_schema.cached_member(redis_client, A) == member
    assert redis_schema.cached_member(redis_client, B) is None
    assert redis_schema.cached_members(redis_client, [A, B]) == {A: member}
    assert redis_schema.cached_group(redis_client, G) == group
    assert 0 < redis_client.ttl(redis_schema.group_key(G)) <= redis_schema.GROUP_TTL
    redis_client.set(redis_schema.member_key(B), "not json")
    assert redis_schema.cached_member(redis_client, B) is None
    assert redis_schema.all_members(redis_client) == {A: member}


def test_a_member_is_read_again_when_group_ttl_old_but_kept_for_the_cache_s_readers(
        redis_client):
    member = Member(A, known=True, messaging=True, status="ACTIVE", host="c1", group=G)
    redis_schema.cache_member(redis_client, member)
    assert 2 * redis_schema.GROUP_TTL < redis_client.ttl(redis_schema.member_key(A)) \
        <= redis_schema.MEMBER_TTL
    raw = json.loads(redis_client.get(redis_schema.member_key(A)))
    raw["read_at"] -= redis_schema.GROUP_TTL + 1  # read from Nova 31 s ago
    redis_client.set(redis_schema.member_key(A), json.dumps(raw))
    assert redis_schema.cached_member(redis_client, A,
                                      max_age=redis_schema.GROUP_TTL) is None  # the agent
    assert redis_schema.cached_member(redis_client, A) == member  # the proxy, the relay
    assert redis_schema.cached_members(redis_client, [A]) == {A: member}


def test_what_a_group_sent_is_kept_bounded_without_bodies(redis_client):
    for n in range(redis_schema.SENT_MAX + 5):
        redis_schema.note_sent(redis_client, G, f"m{n}", A, "*", n, 1000.0 + n)
    sent = redis_schema.sent_messages(redis_client, G)
    assert len(sent) == redis_schema.SENT_MAX
    assert sent[-1] == {"id": f"m{redis_schema.SENT_MAX + 4}", "from": A, "to": "*",
                        "size": str(redis_schema.SENT_MAX + 4),
                        "sent_at": repr(1000.0 + redis_schema.SENT_MAX + 4)}
    assert [f["id"] for f in redis_schema.sent_messages(redis_client, G, 2)] == [
        f"m{redis_schema.SENT_MAX + 3}", f"m{redis_schema.SENT_MAX + 4}"]
    assert 0 < redis_client.ttl(redis_schema.sent_key(G)) <= redis_schema.REPORT_TTL


def test_the_reports_owed_are_read_first_to_expire_and_bounded(redis_client):
    for n in range(5):
        redis_schema.track_report(redis_client, A, G, f"m{n}", 1000.0 - n)
    owed = redis_schema.open_reports(redis_client, [A, B], limit=3)
    assert owed == {A: [(G, f"m{n}", 1000.0 - n) for n in (4, 3, 2)]}  # B is owed none
    redis_schema.open_report(redis_client, G, "m4", [B], 1000.0)
    assert redis_schema.reports(redis_client, [(G, "m4"), (G, "gone")], 999.0) == [
        {B: "pending"}, {}]
    redis_schema.close_report(redis_client, A, G, "m4")
    assert [m for _, m, _ in redis_schema.open_reports(redis_client, [A])[A]] == [
        "m3", "m2", "m1", "m0"]
