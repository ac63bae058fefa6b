"""Redis faults on the proxy's side: Redis trouble is `unreachable`, never the guest's silence,
and no Redis fault holds the caller past the deadline.

The guest's application NACKs, after a pause during which the test freezes or
kills Redis. Through a proxy with ``silence = accept`` and ``unreachable = reject``
(so the two are told apart by the answer): a 409 that says the guest could not be
asked, and Nova does not reboot. Through the stack's own proxy (both ``accept``,
the defaults): the answer still comes within the deadline plus :data:`MARGIN`.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from guestd.client import Vote
from harness.processes import wait_for
from harness.proxies import start_proxy
from novaproxy.api import _guest, policy
from tests.faults.conftest import VOTE_TIMEOUT
from tests.faults.test_redis_agent import reboot

pytestmark = pytest.mark.faults

REASON = "replication in progress"
# The proxy's part after the vote deadline: the reply's grace, one bounded Redis
# command to tell a lost Redis from a silent agent, and a loaded two-core machine.
MARGIN = _guest.REPLY_GRACE + policy.DEFAULT_REDIS_TIMEOUT + 2.0


@pytest.fixture(scope="module")
def strict(_fault_stack):
    """A proxy that rejects when the guest cannot be asked, and accepts silence."""
    with start_proxy(_fault_stack, "redis-strict", silence="accept",
                     unreachable="reject") as proxy:
        yield SimpleNamespace(proxy_url=proxy.url)  # what reboot() reads


class SlowNack:
    """An application that NACKs after ``pause`` seconds, saying when it was asked."""

    def __init__(self, recorder, guest, pause: float = 1.0) -> None:
        self.asked = threading.Event()
        self.pause = pause
        self.rec = recorder(guest, name="db", verdict=self._verdict)

    def _verdict(self, notice):
        self.asked.set()
        time.sleep(self.pause)
        return Vote.reject(REASON)


def reboot_in_background(via, server_id: str) -> dict:
    """Ask for the reboot through ``via`` (anything with a ``proxy_url``) in a thread."""
    result: dict = {}

    def run() -> None:
        result["answer"] = reboot(via, server_id)

    result["thread"] = threading.Thread(target=run, daemon=True)
    result["thread"].start()
    return result


def finished(result: dict) -> tuple:
    result["thread"].join(VOTE_TIMEOUT + MARGIN + 30)
    return result["answer"]


@pytest.fixture
def vm(fault_stack, fault_flavor):
    server, _ = fault_stack.boot("redis-proxy", fault_flavor)
    return server.id, fault_stack.guests[server.id]


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_redis_lost_mid_vote_is_unreachable_not_silence(fault_stack, strict, vm, recorder,
                                                        fault):
    server_id, guest = vm
    app = SlowNack(recorder, guest)
    result = reboot_in_background(strict, server_id)
    assert app.asked.wait(VOTE_TIMEOUT), "the vote never reached the application"
    getattr(fault_stack.redis, fault)()
    try:
        status, marker, message, took = finished(result)
    finally:
        if fault == "freeze":
            fault_stack.redis.thaw()
        else:
            fault_stack.redis.start(keep_data=False)
    assert (status, marker) == (409, "action-rejected")
    assert "could not be asked" in message and "Redis" in message
    assert took <= VOTE_TIMEOUT + MARGIN
    assert "reboot" not in fault_stack.instance_actions(server_id)


def test_redis_frozen_mid_vote_does_not_hold_the_caller(fault_stack, vm, recorder):
    """The defaults (unreachable = accept): the reboot goes on, but within the deadline."""
    server_id, guest = vm
    app = SlowNack(recorder, guest)
    result = reboot_in_background(fault_stack, server_id)
    assert app.asked.wait(VOTE_TIMEOUT)
    fault_stack.redis.freeze()
    try:
        status, _, _, took = finished(result)
    finally:
        fault_stack.redis.thaw()
    assert status == 202  # unreachable = accept: the operator's choice, followed
    assert took <= VOTE_TIMEOUT + MARGIN


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_redis_down_before_the_request(fault_stack, strict, vm, recorder, fault):
    server_id, guest = vm
    app = SlowNack(recorder, guest, pause=0)
    getattr(fault_stack.redis, fault)()
    try:
        status, marker, message, took = reboot(strict, server_id)
        default_status, _, _, default_took = reboot(fault_stack, server_id)
    finally:
        if fault == "freeze":
            fault_stack.redis.thaw()
        else:
            fault_stack.redis.start(keep_data=False)
    assert (status, marker) == (409, "action-rejected") and "Redis unavailable" in message
    # Bounded by one Redis command's timeout, not by the vote deadline.
    assert took <= policy.DEFAULT_REDIS_TIMEOUT + 2.0
    assert default_status == 202 and default_took <= policy.DEFAULT_REDIS_TIMEOUT + 2.0
    assert app.rec.seen == []


def test_the_proxy_asks_again_once_redis_is_back(fault_stack, strict, vm, recorder):
    """Killed and restarted empty: the proxy's reply reader reconnects, the agent makes
    its request group again, and the guest's NACK stops the reboot as before."""
    server_id, guest = vm
    recorder(guest, name="db", verdict=lambda n: Vote.reject(REASON))
    fault_stack.redis.kill()
    fault_stack.redis.start(keep_data=False)

    def nacked() -> bool:
        status, marker, message, _ = reboot(strict, server_id)
        assert status in (409,), (status, message)
        return marker == "action-rejected" and REASON in message

    wait_for(nacked, 20, "the guest's NACK through a restarted Redis", interval=0.5)
    assert "reboot" not in fault_stack.instance_actions(server_id)
