"""The novaproxy-scale action through the proxy, with real novaclient, the real Nova API,
Redis, agents, qemu-ga and guestd: who may ask, what the flavor allows, and one
operation per server.

The system tier's guests are host processes: their qemu-ga reads the host's own
vCPUs (2 online of 2 here) and refuses ``guest-set-vcpus`` (the harness's block list,
:func:`harness.guest.host_block_list`), so a scale-down here is voted on and prepared,
then fails in the guest and is aborted: the vm tier shows vCPUs really changing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest
from novaclient import exceptions

from guestd.client import Vote
from harness.audit import wait_audits
from harness.stack import ADMIN_TOKEN
from novaproxy import audit, redis_schema

SCALE = "novaproxy-scale"


def scale(nova, server, **args):
    """The action through novaclient (``servers._action`` posts ``{action: info}``)."""
    return nova.servers._action(SCALE, server, args)


@pytest.fixture(scope="module")
def scaling_flavor(stack):
    return stack.flavor(f"scaling-{uuid.uuid4().hex[:6]}",
                        {"guest:negotiation": "true", "guest:vcpu_scaling": "true"}, vcpus=2)


@pytest.fixture
def vm(stack, scaling_flavor):
    server, _ = stack.boot("scaled", scaling_flavor)
    return server, stack.guests[server.id]


def test_another_projects_server_is_not_found_as_nova_says_it(stack, vm):
    server, _ = vm
    with pytest.raises(exceptions.NotFound) as raised:
        scale(stack.nova(token="someone:elsewhere"), server.id, step="down")
    assert f"Instance {server.id} could not be found" in str(raised.value)


def test_policy_errors_say_what_to_fix(stack, vm, negotiated_flavor, recorder):
    server, guest = vm
    rec = recorder(guest, name="db")
    nova = stack.nova()
    cases = [
        ({"online": 3}, "3 vCPU(s) online is out of range: this flavor allows 1"),
        ({"online": 2}, "2 vCPU(s) are online already"),
        ({"step": "up"}, "3 vCPU(s) online is out of range"),
        ({"online": 0}, "\"online\" must be a whole number of vCPUs, at least 1"),
        ({"step": "sideways"}, "\"step\" must be \"up\" or \"down\""),
    ]
    for args, says in cases:
        with pytest.raises(exceptions.BadRequest) as raised:
            scale(nova, server.id, **args)
        assert says in str(raised.value), args
    plain, _ = stack.boot("not-scaled", negotiated_flavor, with_guest=False)
    with pytest.raises(exceptions.BadRequest) as raised:
        scale(nova, plain.id, step="down")
    assert "guest:vcpu_scaling=true" in str(raised.value)
    assert rec.seen == []  # nothing was put to the guest


def test_a_bad_minimum_is_the_operators_to_fix(stack):
    flavor = stack.flavor(f"bad-min-{uuid.uuid4().hex[:6]}",
                          {"guest:vcpu_scaling": "true", "guest:min_vcpus": "3"}, vcpus=2)
    server, _ = stack.boot("bad-min", flavor, with_guest=False)
    with pytest.raises(exceptions.BadRequest) as raised:
        scale(stack.nova(), server.id, online=1)
    assert "guest:min_vcpus='3' is not a whole number from 1 to its 2 vCPUs" in str(
        raised.value)


def test_a_nack_stops_it_with_the_reason(stack, vm, recorder):
    server, guest = vm
    rec = recorder(guest, name="db", verdict=lambda n: Vote.reject("rebalancing shards"))
    with pytest.raises(exceptions.Conflict) as raised:
        scale(stack.nova(), server.id, step="down")
    assert "action-rejected" in str(raised.value)
    assert "db: rebalancing shards" in str(raised.value)
    assert rec.seen == [("scale-down", "vote")]


def test_a_guest_that_cannot_make_the_change_is_told_abort(stack, vm, recorder):
    server, guest = vm
    notices = []
    rec = recorder(guest, name="db")
    recorded = rec.app.on_notice
    rec.app.on_notice = lambda notice: (notices.append(notice), recorded(notice))
    with pytest.raises(exceptions.Conflict) as raised:
        scale(stack.nova(), server.id, online=1)
    assert "scale-failed" in str(raised.value)
    assert "guest-set-vcpus" in str(raised.value)  # the guest agent's own refusal
    assert rec.wait_for(3) == [("scale-down", "vote"), ("scale-down", "prepare"),
                               ("scale-down", "abort")]
    prepare = notices[0]
    assert prepare.online == (0, 1) and prepare.target == 1 and prepare.offline == (1,)
    closed = wait_audits(stack, server.id, audit.OPERATION)
    assert closed[0]["outcome"] == "abort-delivered"
    assert redis_schema.vcpus_of(redis_schema.connect(stack.redis.url), server.id) is None


def test_one_operation_at_a_time(stack, vm, recorder):
    server, guest = vm
    voting = threading.Event()

    def slow(notice):
        voting.set()
        time.sleep(3)
        return Vote.reject("not now")

    recorder(guest, name="db", verdict=slow)
    rebooting = threading.Thread(target=lambda: pytest.raises(
        exceptions.Conflict, stack.nova().servers.reboot, server.id), daemon=True)
    rebooting.start()
    assert voting.wait(10)
    with pytest.raises(exceptions.Conflict) as raised:
        scale(stack.nova(), server.id, step="down")
    assert "negotiation-in-progress" in str(raised.value)
    rebooting.join(15)


def test_a_stopped_server_is_not_scaled(stack, vm):
    server, _ = vm
    stack.nova(direct=True).servers.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    with pytest.raises(exceptions.Conflict) as raised:
        scale(stack.nova(), server.id, step="down")
    assert f"Cannot '{SCALE}' instance {server.id} while it is in vm_state stopped" in str(
        raised.value)


def novaproxy_scale(stack, *args):
    """The operator's CLI against the real proxy, authenticated as the harness's admin."""
    endpoint = f"{stack.proxy_url}/v2.1"
    return subprocess.run(
        [sys.executable, "-m", "novaproxy.cli", "scale", *args, "--endpoint", endpoint,
         "--os-auth-type", "admin_token", "--os-endpoint", endpoint, "--os-token",
         ADMIN_TOKEN], capture_output=True, text=True, timeout=120)


def test_the_cli_says_what_the_proxy_answered(stack, vm, recorder):
    server, guest = vm
    rec = recorder(guest, name="db")
    out = novaproxy_scale(stack, server.id, "--online", "3")
    assert out.returncode == 1
    assert "HTTP 400 badRequest" in out.stderr and "out of range" in out.stderr
    out = novaproxy_scale(stack, server.id, "--down")
    assert out.returncode == 1, out.stderr
    assert "[OpenStack-Novaproxy-Result: scale-failed]" in out.stderr
    assert rec.wait_for(3) == [("scale-down", "vote"), ("scale-down", "prepare"),
                               ("scale-down", "abort")]
    assert ADMIN_TOKEN not in out.stdout + out.stderr
