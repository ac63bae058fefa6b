from novaproxy import redis_schema


def test_keys_of_one_instance_share_a_hash_slot():
    tags = {key[key.index("{"):key.index("}") + 1]
            for key in (redis_schema.route_key("u1"), redis_schema.lock_key("u1"),
                        redis_schema.ops_key("u1"), redis_schema.recovery_key("u1"),
                        redis_schema.recoveries_key("u1"), redis_schema.monitor_key("u1"))}
    assert tags == {"{u1}"}


def test_redact_hides_passwords_only():
    assert redis_schema.redact("redis://user:s3cret@h:6379/0") == "redis://user:***@h:6379/0"
    assert redis_schema.redact("rediss://:s3cret@h/0") == "rediss://:***@h/0"
    assert redis_schema.redact("redis://h:6379/0") == "redis://h:6379/0"


def test_reply_round_trip_ignores_unknown_fields():
    reply = redis_schema.Reply("r", "i", "accept", [{"name": "a"}], "", "c1")
    fields = reply.fields()
    assert redis_schema.Reply.from_fields(fields) == reply
    newer = {"reply": fields["reply"][:-1] + ', "extra": 1}'}
    assert redis_schema.Reply.from_fields(newer) == reply


def test_entry_age_uses_the_stream_id_clock():
    assert abs(redis_schema.entry_age("1700000000000-0", 1700000002.5) - 2.5) < 1e-9
