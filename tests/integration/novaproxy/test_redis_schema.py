"""Recovery claims, the monitor's published view, scripts, and every client's bounds
under Redis faults, on a real redis-server."""

import threading
import time

import pytest
import redis

from harness.redis_server import RedisServer
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
    assert redis_client.zcard(redis_schema.recoveries_key("u-1")) == 3
    # A window that has moved past them allows recoveries again.
    assert claim(redis_client, "a4", window=0.000001) == redis_schema.CLAIMED


def test_claims_expire_with_their_hold(redis_client):
    assert claim(redis_client, "gone-agent", hold=0.05) == redis_schema.CLAIMED
    time.sleep(0.1)
    assert claim(redis_client, "next-agent") == redis_schema.CLAIMED


def test_monitor_views_are_replaced_not_merged(redis_client):
    redis_schema.publish_monitor(redis_client, {"u-1": {"state": "suspect", "why": "miss"}}, 30)
    redis_schema.publish_monitor(redis_client, {"u-1": {"state": "healthy"}}, 30)
    assert redis_schema.all_monitored(redis_client) == {"u-1": {"state": "healthy"}}
    assert 0 < redis_client.ttl(redis_schema.monitor_key("u-1")) <= 30


# -- bounds and scripts under Redis faults ------------------------------------------

MARGIN = 0.5  # seconds, for a loaded machine


@pytest.fixture
def own_redis(short_dir):
    server = RedisServer(f"{short_dir}/redis")
    yield server
    server.stop()


def test_a_hung_redis_costs_one_socket_timeout(own_redis):
    client = redis_schema.connect(own_redis.url, socket_timeout=0.5)
    client.ping()
    own_redis.freeze()
    for _ in range(2):  # on the pooled connection, then on a new one
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.set("k", "v")
        assert time.monotonic() - started < 0.5 + MARGIN  # never retried
    own_redis.thaw()
    assert client.ping()


def test_a_dead_redis_fails_at_once_and_a_restarted_one_is_used_again(own_redis):
    client = redis_schema.connect(own_redis.url)
    client.set("k", "v")
    own_redis.kill()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    assert time.monotonic() - started < MARGIN  # no backoff between retries
    own_redis.start(keep_data=False)
    assert client.get("k") is None  # the stale connection is replaced, no error


def test_a_bounded_pool_waits_at_most_its_pool_timeout(own_redis):
    client = redis_schema.connect(own_redis.url, max_connections=1, pool_timeout=0.3)
    busy = threading.Thread(target=lambda: client.xread({"nothing": "$"}, block=1500))
    busy.start()
    time.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert time.monotonic() - started < 0.3 + MARGIN
    busy.join()


def test_scripts_run_by_sha_and_are_loaded_again_after_redis_lost_them(own_redis):
    client = redis_schema.connect(own_redis.url)
    assert redis_schema.acquire_lock(client, "u-1", "me", 30)
    redis_schema.release_lock(client, "u-1", "someone else")
    assert redis_schema.lock_key("u-1") in client.keys()
    redis_schema.release_lock(client, "u-1", "me")
    assert client.keys() == []
    own_redis.restart(keep_data=False)  # the script cache goes with it
    assert claim(client, "agent-a") == redis_schema.CLAIMED
    redis_schema.release_recovery(client, "u-1", "agent-a")
    assert claim(client, "agent-b") == redis_schema.CLAIMED
    stats = client.info("commandstats")
    assert "cmdstat_eval" not in stats and stats["cmdstat_evalsha"]["calls"] >= 3


def test_a_lost_request_group_is_told_apart_and_made_again(redis_client):
    assert redis_schema.ensure_group(redis_client, "h")
    assert not redis_schema.ensure_group(redis_client, "h")
    redis_client.flushdb()
    with pytest.raises(redis.ResponseError) as lost:
        redis_schema.take_requests(redis_client, "h", "h", pending=False, block_ms=10)
    assert redis_schema.is_missing_group(lost.value)
    redis_schema.enqueue(redis_client, "h", {"id": "r1"}, "replies")  # before the group
    assert redis_schema.ensure_group(redis_client, "h")
    taken = redis_schema.take_requests(redis_client, "h", "h", pending=False, block_ms=10)
    assert [req["id"] for _, req, _ in taken] == ["r1"]


def record(client, instance="u-1", op_id="op1", state="preparing", host="compute1"):
    redis_schema.record_operation(client, instance, {
        "id": op_id, "event": "reboot", "state": state, "owner": "tok", "created": 1.0,
        "details": {}}, 100, host=host)


def test_a_record_moves_to_forwarding_only_while_its_negotiation_holds_the_lock(redis_client):
    record(redis_client)
    redis_schema.acquire_lock(redis_client, "u-1", "tok", 30)
    moved = redis_schema.update_operation(redis_client, "u-1", "op1", ["preparing"],
                                          {"state": "forwarding", "forwarded_at": 2.5},
                                          holding="tok")
    assert moved
    [op] = redis_schema.operations_of(redis_client, ["u-1"])["u-1"]
    assert (op["state"], op["forwarded_at"], op["details"]) == ("forwarding", 2.5, {})
    # Not from a state it is no longer in.
    assert not redis_schema.update_operation(redis_client, "u-1", "op1", ["preparing"],
                                             {"state": "refused"})
    # Lock lost: the negotiation can no longer move its record on.
    record(redis_client, op_id="op2")
    redis_schema.release_lock(redis_client, "u-1", "tok")
    assert not redis_schema.update_operation(redis_client, "u-1", "op2", ["preparing"],
                                             {"state": "forwarding"}, holding="tok")


def test_an_agent_settles_a_record_only_once_its_negotiation_let_go(redis_client):
    record(redis_client)
    redis_schema.acquire_lock(redis_client, "u-1", "tok", 30)
    assert not redis_schema.update_operation(redis_client, "u-1", "op1", ["preparing"],
                                             {"state": "refused"}, released="tok")
    # A newer negotiation's lock is not this record's.
    redis_schema.release_lock(redis_client, "u-1", "tok")
    redis_schema.acquire_lock(redis_client, "u-1", "newer", 30)
    assert redis_schema.update_operation(redis_client, "u-1", "op1", ["preparing"],
                                         {"state": "refused", "why": "gone"}, released="tok")
    assert redis_schema.operations_of(redis_client, ["u-1"])["u-1"][0]["state"] == "refused"
    assert not redis_schema.update_operation(redis_client, "u-9", "op1", ["refused"], {})


def test_records_are_indexed_by_the_host_that_follows_them(redis_client):
    record(redis_client, "u-1", host="compute1")
    record(redis_client, "u-2", host="compute1")
    record(redis_client, "u-3", host="compute2")
    assert redis_schema.recorded_on(redis_client, "compute1") == {"u-1", "u-2"}
    redis_schema.forget_recorded(redis_client, "compute1", {"u-1"})
    assert redis_schema.recorded_on(redis_client, "compute1") == {"u-2"}
    assert redis_schema.lock_owner(redis_client, "u-1") is None
    redis_schema.acquire_lock(redis_client, "u-2", "tok", 30)
    assert redis_schema.lock_owner(redis_client, "u-2") == "tok"


def test_an_agent_takes_over_its_hosts_leftover_claims_only(redis_client):
    claim = redis_schema.claim_operation
    assert claim(redis_client, "u-1", "op1", "agent:h1:a", 30, "agent:h1:")
    # Another host and a proxy keep their claims...
    assert not claim(redis_client, "u-1", "op1", "agent:h2:b", 30, "agent:h2:")
    assert not claim(redis_client, "u-1", "op1", "proxy:c", 30)
    assert claim(redis_client, "u-1", "op2", "proxy:d", 30)
    assert not claim(redis_client, "u-1", "op2", "agent:h1:e", 30, "agent:h1:")
    # ...while the host's agent takes over what it left (it claims only what it is not
    # delivering: a failed delivery's claim, a killed predecessor's).
    assert claim(redis_client, "u-1", "op1", "agent:h1:f", 30, "agent:h1:")
    assert redis_client.get(redis_schema.claim_key("u-1", "op1")) == "agent:h1:f"
    # Closing the operation removes its claim with it.
    redis_schema.record_operation(redis_client, "u-1", {"id": "op1", "event": "reboot"}, 100)
    assert redis_schema.finish_operation(redis_client, "u-1", "op1")
    assert redis_client.get(redis_schema.claim_key("u-1", "op1")) is None
