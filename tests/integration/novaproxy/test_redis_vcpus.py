"""The vCPU record of each instance (redis_schema.vcpus) on a real redis-server."""

import time

from novaproxy import redis_schema


def test_a_record_reads_back_typed_with_its_time(redis_client):
    before = time.time()
    redis_schema.record_vcpus(redis_client, "u-1", 2, 4, "op-1")
    record = redis_schema.vcpus_of(redis_client, "u-1")
    assert {k: record[k] for k in ("online", "plugged", "operation")} == {
        "online": 2, "plugged": 4, "operation": "op-1"}
    assert before <= record["time"] <= time.time()
    assert redis_schema.vcpus_of(redis_client, "u-2") is None


def test_a_new_record_replaces_the_last_and_keeps_the_week(redis_client):
    redis_schema.record_vcpus(redis_client, "u-1", 2, 4, "op-1")
    redis_schema.record_vcpus(redis_client, "u-1", 3, 4, "op-2")
    assert redis_schema.vcpus_of(redis_client, "u-1")["online"] == 3
    assert redis_schema.vcpus_of(redis_client, "u-1")["operation"] == "op-2"
    ttl = redis_client.pttl(redis_schema.vcpus_key("u-1")) / 1000
    assert redis_schema.VCPUS_TTL - 60 < ttl <= redis_schema.VCPUS_TTL == 7 * 24 * 3600


def test_a_record_expires_with_its_ttl(redis_client):
    redis_schema.record_vcpus(redis_client, "u-1", 1, 2, "op-1", ttl=0.05)
    time.sleep(0.15)
    assert redis_schema.vcpus_of(redis_client, "u-1") is None


def test_a_record_that_cannot_be_read_is_none(redis_client):
    key = redis_schema.vcpus_key("u-1")
    assert key == "novaproxy:{u-1}:vcpus"  # the instance's hash tag
    redis_client.hset(key, mapping={"online": "two", "plugged": "4", "operation": "x",
                                    "time": "1"})
    assert redis_schema.vcpus_of(redis_client, "u-1") is None
    redis_client.hset(key, "online", "2")
    redis_client.hdel(key, "time")
    assert redis_schema.vcpus_of(redis_client, "u-1") is None


def test_every_readable_record_at_once(redis_client):
    redis_schema.record_vcpus(redis_client, "u-1", 2, 4, "op-1")
    redis_schema.record_vcpus(redis_client, "u-2", 1, 2, "op-2")
    redis_client.hset(redis_schema.vcpus_key("u-3"), "online", "1")  # unreadable: left out
    records = redis_schema.all_vcpus(redis_client)
    assert set(records) == {"u-1", "u-2"}
    assert records["u-1"] == redis_schema.vcpus_of(redis_client, "u-1")
