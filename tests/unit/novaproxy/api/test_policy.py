import pytest

from novaproxy import replies
from novaproxy.api import policy

URL = "redis://127.0.0.1:6379/0"


def reply(outcome, voters=(), detail=""):
    return replies.Reply("r1", "vm", outcome, list(voters), detail, "c1")


def test_defaults_from_the_field():
    pol = policy.from_conf({"redis_url": URL})
    assert (pol.vote_timeout, pol.prepare_timeout) == (10.0, 10.0)
    assert pol.mode("reboot") == policy.VOTE and pol.mode("stop") == policy.VOTE
    assert pol.mode("start") == policy.NOTICE  # an end notice once it is running
    assert pol.silence == pol.unreachable == "accept"


def test_operations_override_defaults():
    pol = policy.from_conf({"redis_url": URL, "operations": "stop:off, rebuild:vote"})
    assert pol.mode("stop") == policy.OFF and pol.mode("rebuild") == policy.VOTE
    assert pol.mode("reboot") == policy.VOTE


@pytest.mark.parametrize("conf, message", [
    ({}, "redis_url"),
    ({"redis_url": "http://x"}, "redis_url"),
    ({"redis_url": URL, "vote_timeout": "soon"}, "vote_timeout = 'soon'"),
    ({"redis_url": URL, "prepare_timeout": "0"}, "prepare_timeout"),
    ({"redis_url": URL, "operations": "reboot:maybe"}, "mode must be one of"),
    ({"redis_url": URL, "operations": "explode:vote"}, "unknown event 'explode'"),
    ({"redis_url": URL, "silence": "ignore"}, "silence = 'ignore'"),
    ({"redis_url": URL, "operations": "start:vote"}, "cannot vote"),
    ({"redis_url": URL, "end_timeout": "-3"}, "end_timeout"),
    ({"redis_url": URL, "operation_timeout": "x"}, "operation_timeout"),
    ({"redis_url": URL, "unreachable": "panic"}, "unreachable"),
])
def test_bad_config_says_what_to_fix(conf, message):
    with pytest.raises(policy.PolicyError, match=message.replace("(", r"\(")):
        policy.from_conf(conf)


@pytest.mark.parametrize("specs, metadata, expected", [
    ({"guest:negotiation": "true"}, {}, True),
    ({"guest:negotiation": "True"}, {}, True),
    ({"guest:negotiation": "false"}, {}, False),
    ({}, {}, False),
    ({"guest:negotiation": "true"}, {"guest:negotiation": "false"}, False),
])
def test_flavor_enables_and_metadata_opts_out(specs, metadata, expected):
    server = {"flavor": {"extra_specs": specs}, "metadata": metadata}
    assert policy.negotiates(server) is expected


def test_flavor_vote_timeout():
    pol = policy.from_conf({"redis_url": URL})
    assert pol.vote_timeout_for({"guest:vote_timeout": "3.5"}) == 3.5
    assert pol.vote_timeout_for({"guest:vote_timeout": "-1"}) == 10.0
    assert pol.vote_timeout_for({"guest:vote_timeout": "x"}) == 10.0


def test_decisions():
    pol = policy.from_conf({"redis_url": URL})
    strict = policy.from_conf({"redis_url": URL, "silence": "reject", "unreachable": "reject"})
    nack = reply("reject", [{"name": "db", "vote": "reject", "reason": "busy"}])
    assert policy.decide(pol, reply("accept")).proceed
    assert policy.decide(pol, nack) == policy.Decision(False, "the guest rejected", ["db: busy"])
    assert policy.decide(strict, reply("not-negotiating")).proceed
    for outcome in ("timeout", "expired"):
        assert policy.decide(pol, reply(outcome)).proceed
        assert not policy.decide(strict, reply(outcome)).proceed
    for outcome in ("unreachable", "invalid"):
        assert policy.decide(pol, reply(outcome)).proceed
        decision = policy.decide(strict, reply(outcome, detail="no socket"))
        assert not decision.proceed and "no socket" in decision.reasons[0]
