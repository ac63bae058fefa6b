"""Redis faults on the agent's side: the guest's NACK still stops the reboot.

Each test asks through novaproxy-api for a reboot of a negotiated server whose
guest application rejects it, after (or while) Redis was restarted or killed
under the running agent, and asserts what the client got (status, marker,
reason) within the vote deadline plus :data:`MARGIN`, and that Nova did not
reboot the server (its instance actions).
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import urllib3

from guestd.client import Vote
from harness.processes import wait_for
from harness.stack import ADMIN_TOKEN, MICROVERSION
from novaproxy import redis_schema
from novaproxy.agent import service
from tests.faults.conftest import VOTE_TIMEOUT

pytestmark = pytest.mark.faults

REASON = "replication in progress"
# Beyond the vote deadline: the proxy's own work and a loaded two-core machine.
MARGIN = 2.0
# An agent puts its routes back within its request loop's retry and one route
# interval (the stack's: 0.5 s) after Redis is back; plus a margin of 2 s.
ROUTES_BACK = service.REDIS_RETRY + 0.5 + 2.0


@pytest.fixture
def vm(fault_stack, fault_flavor):
    server, host = fault_stack.boot("nacking", fault_flavor)
    return server.id, host, fault_stack.guests[server.id]


def reboot(stack, server_id: str) -> tuple:
    """(status, marker header, message, seconds) of a soft reboot asked through the proxy."""
    started = time.monotonic()
    resp = urllib3.request(
        "POST", f"{stack.proxy_url}/v2.1/servers/{server_id}/action",
        body=json.dumps({"reboot": {"type": "SOFT"}}),
        headers={"X-Auth-Token": ADMIN_TOKEN, "Content-Type": "application/json",
                 "OpenStack-API-Version": f"compute {MICROVERSION}"},
        timeout=urllib3.Timeout(total=60), retries=False)
    took = time.monotonic() - started
    print(f"reboot of {server_id}: {resp.status} "
          f"{resp.headers.get('OpenStack-Novaproxy-Result')} in {took:.2f}s")
    try:
        message = next(iter(json.loads(resp.data).values())).get("message", "")
    except (ValueError, StopIteration, AttributeError):
        message = resp.data.decode(errors="replace")
    return resp.status, resp.headers.get("OpenStack-Novaproxy-Result"), message, took


def assert_rejected(stack, server_id: str, answer: tuple) -> None:
    status, marker, message, took = answer
    assert (status, marker) == (409, "action-rejected"), answer
    assert f"db: {REASON}" in message
    assert took < VOTE_TIMEOUT + MARGIN, answer
    assert "reboot" not in stack.instance_actions(server_id)


def wait_route(stack, server_id: str, host: str, timeout: float) -> float:
    """Seconds until the server's route is published (again)."""
    client = redis_schema.connect(stack.redis.url)
    started = time.monotonic()
    try:
        wait_for(lambda: redis_schema.route_of(client, server_id) == host, timeout,
                 f"the route of {server_id}")
    finally:
        client.close()
    took = time.monotonic() - started
    print(f"route of {server_id} published again after {took:.2f}s")
    return took


class AgentLog:
    """What an agent's log says from now on."""

    def __init__(self, stack, host: str) -> None:
        self.path = stack.agents[host].log_path
        self.start = os.path.getsize(self.path)

    def lines(self, text: str) -> list:
        with open(self.path, errors="replace") as f:
            f.seek(self.start)
            return [line for line in f if text in line]


def test_redis_restarted_without_its_data(fault_stack, vm, recorder):
    """Without persistence a restart loses the request group: the agent makes it again."""
    server_id, host, guest = vm
    recorder(guest, name="db", verdict=lambda n: Vote.reject(REASON))
    assert_rejected(fault_stack, server_id, reboot(fault_stack, server_id))
    log = AgentLog(fault_stack, host)
    pid = fault_stack.agents[host].pid
    fault_stack.redis.restart(keep_data=False)
    wait_route(fault_stack, server_id, host, ROUTES_BACK)
    assert_rejected(fault_stack, server_id, reboot(fault_stack, server_id))
    assert fault_stack.agents[host].pid == pid  # the same agent: not restarted
    assert len(log.lines("lost this host's request group")) == 1
    assert log.lines("NOGROUP") == []


def test_redis_killed_and_restarted_empty_while_the_agent_is_idle(fault_stack, vm, recorder):
    """SIGKILL: no shutdown, every connection reset; Redis comes back with nothing."""
    server_id, host, guest = vm
    recorder(guest, name="db", verdict=lambda n: Vote.reject(REASON))
    log = AgentLog(fault_stack, host)
    pid = fault_stack.agents[host].pid
    fault_stack.redis.kill()
    time.sleep(2.0)  # the agent's loops meet a dead Redis for a while
    fault_stack.redis.start(keep_data=False)
    wait_route(fault_stack, server_id, host, ROUTES_BACK)
    assert_rejected(fault_stack, server_id, reboot(fault_stack, server_id))
    assert fault_stack.agents[host].pid == pid
    assert len(log.lines("lost this host's request group")) == 1
    # Said once when lost and once when back, per loop: not every retry.
    assert len(log.lines("reading requests: Redis unreachable")) == 1
    assert len(log.lines("reading requests: Redis answers again")) == 1


@pytest.mark.parametrize("keep_data", [True, False], ids=["with-data", "without-data"])
def test_redis_restarted_while_the_guest_votes(fault_stack, vm, recorder, keep_data):
    """The guest's NACK meets a dead Redis: the agent sends it again once Redis is back,
    and the proxy, still waiting, gets it; the next reboot is rejected too."""
    server_id, host, guest = vm
    voting, answer_now = threading.Event(), threading.Event()

    def verdict(notice):
        voting.set()
        answer_now.wait(VOTE_TIMEOUT)
        return Vote.reject(REASON)

    recorder(guest, name="db", verdict=verdict)
    answers = []
    asking = threading.Thread(target=lambda: answers.append(reboot(fault_stack, server_id)))
    asking.start()
    try:
        assert voting.wait(VOTE_TIMEOUT), "the guest was not asked"
        if keep_data:
            fault_stack.redis.save()
        fault_stack.redis.kill()
        answer_now.set()  # the NACK is ready while Redis is down
        time.sleep(1.0)
        fault_stack.redis.start(keep_data=keep_data)
    finally:
        answer_now.set()
        asking.join(60)
    assert_rejected(fault_stack, server_id, answers[0])
    wait_route(fault_stack, server_id, host, ROUTES_BACK)
    assert_rejected(fault_stack, server_id, reboot(fault_stack, server_id))
