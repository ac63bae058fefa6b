"""Recovery claims and the monitor's published view, on a real redis-server."""

import threading

from novaproxy import redis_schema


def claim(client, owner, hold=60.0, window=3600.0, allowed=3):
    return redis_schema.claim_recovery(client, "u-1", owner, hold, window, allowed)


def test_one_recovery_at_a_time(redis_client):
    assert claim(redis_client, "agent-a") == redis_schema.CLAIMED
    assert claim(redis_client, "agent-b") == redis_schema.ALREADY_CLAIMED
    redis_schema.release_recovery(redis_client, "u-1", "agent-b")  # not b's to release
    assert claim(redis_client, "agent-b") == redis_schema.ALREADY_CLAIMED
    redis_schema.release_recovery(redis_client, "u-1", "agent-a")
    assert claim(redis_client, "agent-b") == redis_schema.CLAIMED


def test_concurrent_claims_have_one_winner(redis_server):
    results = []

    def race(owner):
        client = redis_schema.connect(redis_server.url)
        results.append(claim(client, owner))

    redis_schema.connect(redis_server.url).flushdb()
    threads = [threading.Thread(target=race, args=(f"agent-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [redis_schema.ALREADY_CLAIMED] * 7 + [redis_schema.CLAIMED]


def test_rate_limit_per_window(redis_client):
    for n in range(3):
        assert claim(redis_client, f"a{n}", hold=0.001) == redis_schema.CLAIMED
        redis_schema.release_recovery(redis_client, "u-1", f"a{n}")
    assert claim(redis_client, "a3") == redis_schema.RATE_LIMITED
    assert redis_schema.recoveries_within(redis_client, "u-1", 3600) == 3
    # A window that has moved past them allows recoveries again.
    assert claim(redis_client, "a4", window=0.000001) == redis_schema.CLAIMED


def test_claims_expire_with_their_hold(redis_client):
    import time

    assert claim(redis_client, "gone-agent", hold=0.05) == redis_schema.CLAIMED
    time.sleep(0.1)
    assert claim(redis_client, "next-agent") == redis_schema.CLAIMED


def test_monitor_views_are_replaced_not_merged(redis_client):
    redis_schema.publish_monitor(redis_client, {"u-1": {"state": "suspect", "why": "miss"}}, 30)
    redis_schema.publish_monitor(redis_client, {"u-1": {"state": "healthy"}}, 30)
    assert redis_schema.all_monitored(redis_client) == {"u-1": {"state": "healthy"}}
    assert 0 < redis_client.ttl(redis_schema.monitor_key("u-1")) <= 30
