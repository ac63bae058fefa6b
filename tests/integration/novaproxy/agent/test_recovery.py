"""Confirm, claim, act: recovery decisions against the real Nova API and a real redis-server.

The servers' flavor does not turn monitoring on, so the stack's own agents leave
them alone and these tests drive :class:`Recovery` by themselves.
"""

import time
import uuid

import pytest

from harness.audit import audits
from harness.stack import ADMIN_TOKEN
from novaproxy import audit, redis_schema
from novaproxy.agent import monitor
from novaproxy.agent import nova as nova_client
from novaproxy.agent.config import MonitoringConfig
from novaproxy.agent.recovery import Recovery

HUNG = monitor.Failure(monitor.HUNG, monitor.REBOOT, "3 consecutive guest-pings unanswered",
                       {"missed_pings": 3})


@pytest.fixture
def server(stack, plain_flavor):
    return stack.boot("recovered", plain_flavor, with_guest=False)


def recovery_for(stack, host, **config):
    nova = nova_client.from_section({"auth_type": "admin_token", "token": ADMIN_TOKEN,
                                     "endpoint": f"{stack.nova_url}/v2.1"})
    return Recovery(redis_schema.connect(stack.redis.url), host, nova, None,
                    MonitoringConfig(**config))


def test_rate_limit_leaves_the_vm_alone_and_says_so(stack, server):
    (vm, host) = server
    recovery = recovery_for(stack, host, max_recoveries=1)
    first = recovery.handle(vm.id, HUNG)
    assert (first.state, first.why) == (monitor.RECOVERING, "Nova hard reboot requested")
    assert recovery.handle(vm.id, HUNG).why.startswith("a recovery is already under way")
    recovery.answered(vm.id)  # the guest answered again: the claim is released
    stack.wait_for_server(vm.id, "ACTIVE")
    third = recovery.handle(vm.id, HUNG)
    assert third.state == monitor.LEFT_ALONE
    assert "1 recoveries within 3600s already; an operator must look at it" in third.why
    assert stack.instance_actions(vm.id).count("reboot") == 1
    event = audits(stack, vm.id, audit.RECOVERY)[-1]
    assert event["outcome"] == monitor.LEFT_ALONE and event["host"] == host


def test_no_recovery_when_the_silence_is_intended(stack, server):
    (vm, host) = server
    recovery = recovery_for(stack, host)
    # A server Nova has on another host is not this agent's to recover.
    assert recovery_for(stack, "elsewhere").handle(vm.id, HUNG).state == monitor.QUIET
    # An operation on record: its silence is intended.
    redis_schema.record_operation(recovery.redis, vm.id, {
        "id": uuid.uuid4().hex, "event": "migrate", "created": time.time(),
        "expires": time.time() + 60}, 60)
    outcome = recovery.handle(vm.id, HUNG)
    assert (outcome.state, outcome.why) == (
        monitor.QUIET, "not a failure after all: migrate in flight (recorded by the proxy)")
    # A user's own stop.
    redis_schema.connect(stack.redis.url).delete(redis_schema.ops_key(vm.id))
    stack.nova(direct=True).servers.stop(vm.id)
    stack.wait_for_server(vm.id, "SHUTOFF")
    assert recovery.handle(vm.id, HUNG).why == "not a failure after all: Nova reports it SHUTOFF"
    assert "reboot" not in stack.instance_actions(vm.id)


def test_log_only_and_stop(stack, server):
    (vm, host) = server
    recovery = recovery_for(stack, host)
    logged = recovery.handle(vm.id, monitor.Failure(monitor.APPLICATION, monitor.LOG, "x", {}))
    assert logged.state == monitor.LEFT_ALONE and "log only" in logged.why
    stopped = recovery.handle(vm.id, monitor.Failure(monitor.APPLICATION, monitor.STOP, "x", {}))
    assert stopped.why == "Nova stop requested"
    stack.wait_for_server(vm.id, "SHUTOFF")
