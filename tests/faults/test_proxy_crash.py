"""A proxy SIGKILLed mid-negotiation frees its server within one lease, and its prepared
guest hears abort before anything else.

The negotiation lock is a short lease the negotiating proxy renews
(lease.LOCK_LEASE); a killed proxy renews nothing, so the next caller,
through another proxy, is answered by the guest within a lease, not after the
whole negotiation's longest possible time (124 s before). The operation was
recorded before its prepare went out, and never marked as sent to Nova: once its
lock is gone, the agent closes it with an abort — before the next operation's
vote reaches the guest.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import urllib3

from guestd.client import Application, Vote
from harness.audit import audits, wait_audits
from harness.processes import wait_for
from harness.proxies import start_proxy
from harness.stack import ADMIN_TOKEN
from novaproxy import audit, redis_schema
from novaproxy.api import lease, responses
from tests.faults.test_redis_agent import reboot

pytestmark = pytest.mark.faults

MARGIN = 3.0


def slow_prepare() -> tuple:
    """(what the application heard: (event, phase, operation); set once a prepare arrived;
    its notice handler, which takes a second over each prepare: time to kill a proxy)."""
    heard, preparing = [], threading.Event()

    def notice(n):
        heard.append((n.event, n.phase, n.details.get("operation")))
        if n.phase == "prepare":
            preparing.set()
            time.sleep(1.0)

    return heard, preparing, notice


def test_a_proxy_killed_mid_prepare_frees_the_server_within_a_lease(_fault_stack, fault_stack,
                                                                    fault_flavor):
    server, _ = fault_stack.boot("proxy-crash", fault_flavor)
    heard, preparing, notice = slow_prepare()

    def vote(n):
        heard.append((n.event, n.phase, n.details.get("operation")))
        return Vote.reject("replication in progress")

    app = Application("db", on_vote=vote, on_notice=notice,
                      socket_path=fault_stack.guests[server.id].guestd_socket).start()
    doomed = start_proxy(_fault_stack, "doomed", operations="reboot:notice")
    try:
        assert app.registered.wait(5)
        # A notice-only reboot through the doomed proxy: prepare, no vote.
        via_doomed = SimpleNamespace(proxy_url=doomed.url)  # what reboot() reads

        def ask_the_doomed_proxy() -> None:
            try:
                reboot(via_doomed, server.id)
            except urllib3.exceptions.HTTPError:
                pass  # killed while we wait: the point of the test

        threading.Thread(target=ask_the_doomed_proxy, daemon=True).start()
        assert preparing.wait(10), "the prepare never reached the application"
        doomed.process.signal(signal.SIGKILL)
        killed = time.monotonic()
        while True:  # the stack's own proxy: in progress until the lease runs out
            status, marker, message, _ = reboot(fault_stack, server.id)
            if marker != responses.IN_PROGRESS:
                break
            assert time.monotonic() - killed < lease.LOCK_LEASE + MARGIN, message
            time.sleep(0.2)
        freed = time.monotonic() - killed
        print(f"server free {freed:.1f}s after the proxy was killed")
        assert (status, marker) == (409, "action-rejected") and "replication" in message
        assert freed < lease.LOCK_LEASE + MARGIN
        # The killed negotiation's prepare was closed by an abort, before the next vote.
        (_, _, crashed), = [h for h in heard if h[1] == "prepare"]
        assert [(e, p) for e, p, _ in heard] == [
            ("reboot", "prepare"), ("reboot", "abort"), ("reboot", "vote")]
        assert heard[1][2] == crashed and heard[2][2] != crashed
    finally:
        doomed.stop()
        app.stop()


def test_a_proxy_killed_mid_scale_down_changes_nothing_and_its_guest_hears_abort(
        _fault_stack, fault_stack):
    """vCPU scaling is carried out by the agent, in place of Nova: a proxy killed during the
    prepare never asked for the change, so the agent aborts the operation and the guest's
    vCPUs stay as they were."""
    flavor = fault_stack.flavor(f"scale-crash-{uuid.uuid4().hex[:6]}", {
        "guest:negotiation": "true", "guest:vcpu_scaling": "true"}, vcpus=2)
    server, _ = fault_stack.boot("scale-crash", flavor)
    guest = fault_stack.guests[server.id]
    heard, preparing, notice = slow_prepare()
    app = Application("db", on_vote=lambda n: Vote.accept(), on_notice=notice,
                      socket_path=guest.guestd_socket).start()
    doomed = start_proxy(_fault_stack, "doomed-scale")
    try:
        assert app.registered.wait(5)

        def scale_through_the_doomed_proxy() -> None:
            try:
                urllib3.request(
                    "POST", f"{doomed.url}/v2.1/servers/{server.id}/action",
                    body=json.dumps({"novaproxy-scale": {"step": "down"}}),
                    headers={"X-Auth-Token": ADMIN_TOKEN, "Content-Type": "application/json"},
                    timeout=urllib3.Timeout(total=60), retries=False)
            except urllib3.exceptions.HTTPError:
                pass  # killed while we wait: the point of the test

        threading.Thread(target=scale_through_the_doomed_proxy, daemon=True).start()
        assert preparing.wait(10), "the prepare never reached the application"
        doomed.process.signal(signal.SIGKILL)
        wait_for(lambda: len(heard) >= 2, lease.LOCK_LEASE + 20, "the abort", interval=0.1)
        (_, _, prepared), = [h for h in heard if h[1] == "prepare"]
        assert heard == [("scale-down", "prepare", prepared), ("scale-down", "abort", prepared)]
        closed = wait_audits(fault_stack, server.id, audit.OPERATION)
        assert closed[0]["outcome"] == "abort-delivered"
        assert "negotiation ended before" in closed[0]["why"]
        # The agent was never asked to change a vCPU: no scale event, no count recorded.
        assert audits(fault_stack, server.id, audit.SCALE) == []
        assert redis_schema.vcpus_of(redis_schema.connect(fault_stack.redis.url),
                                     server.id) is None
    finally:
        doomed.stop()
        app.stop()
