from redis.commands.core import Script

from novaproxy import redis_schema
from novaproxy.redis_schema import scripts


def test_keys_of_one_instance_share_a_hash_slot():
    tags = {key[key.index("{"):key.index("}") + 1]
            for key in (redis_schema.route_key("u1"), redis_schema.lock_key("u1"),
                        redis_schema.ops_key("u1"), redis_schema.recovery_key("u1"),
                        redis_schema.recoveries_key("u1"), redis_schema.monitor_key("u1"),
                        redis_schema.member_key("u1"), redis_schema.inbox_key("u1"),
                        redis_schema.inbox_pos_key("u1"), redis_schema.outbox_key("u1"))}
    assert tags == {"{u1}"}


def test_keys_of_one_group_share_a_hash_slot():
    tags = {key[key.index("{"):key.index("}") + 1]
            for key in (redis_schema.group_key("g1"), redis_schema.report_key("g1", "m"),
                        redis_schema.group_bucket_key("g1"),
                        redis_schema.sender_bucket_key("g1", "u1"))}
    assert tags == {"{group:g1}"}


def test_redact_hides_passwords_only():
    assert redis_schema.redact("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"
    assert redis_schema.redact("rediss://:s3cret@h/0") == "rediss://:***@h/0"
    assert redis_schema.redact("redis://h:6379/0") == "redis://h:6379/0"


def test_entry_age_uses_the_stream_id_clock():
    assert abs(redis_schema.entry_age("1700000000000-0", 1700000002.5) - 2.5) < 1e-9


def _scripts() -> dict:
    return {name: value.script for name, value in vars(scripts).items()
            if name.isupper() and isinstance(value, Script)}


def test_every_lua_script_names_each_key_and_argument_it_uses():
    import re

    assert set(_scripts()) == {"COMPARE_AND_DELETE", "COMPARE_AND_EXTEND", "CLAIM_RECOVERY",
                              "UPDATE_OPERATION", "CLAIM_OPERATION", "GROUP_RATE",
                              "PEER_NOTICE", "HASH_COMPARE_AND_DELETE"}
    for name, source in _scripts().items():
        header = "\n".join(line for line in source.splitlines() if line.startswith("--"))
        body = "\n".join(line for line in source.splitlines() if not line.startswith("--"))
        used = set(re.findall(r"(?:KEYS|ARGV)\[\d+\]", body))
        named = set(re.findall(r"-- ((?:KEYS|ARGV)\[\d+\]):", header))
        assert used and used == named, name


def test_every_client_has_explicit_bounds():
    client = redis_schema.connect("redis://127.0.0.1:1/0")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (
        redis_schema.SOCKET_TIMEOUT, redis_schema.CONNECT_TIMEOUT)
    assert kwargs["retry"].get_retries() == redis_schema.RETRIES
    pooled = redis_schema.connect("redis://127.0.0.1:1/0", max_connections=2,
                                  socket_timeout=1.5, socket_connect_timeout=0.5,
                                  pool_timeout=0.25)
    kwargs = pooled.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.5, 0.5)
    assert pooled.connection_pool.timeout == 0.25


def test_a_blocking_read_needs_a_socket_timeout_above_its_block():
    import pytest

    short = redis_schema.connect("redis://127.0.0.1:1/0", socket_timeout=1.0)
    with pytest.raises(ValueError, match="blocking_timeout"):
        redis_schema.take_requests(short, "h", "h", pending=False, block_ms=1000)
    with pytest.raises(ValueError):
        redis_schema.read_replies(short, "s", "0-0", 2000)
    assert redis_schema.blocking_timeout(1000, 1.0) == 2.0
