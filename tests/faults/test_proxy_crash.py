"""A proxy SIGKILLed mid-negotiation frees its server within one lease.

The negotiation lock is a short lease the negotiating proxy renews
(negotiation.LOCK_LEASE); a killed proxy renews nothing, so the next caller,
through another proxy, is answered by the guest within a lease, not after the
whole negotiation's longest possible time (124 s before). The prepared guest's
abort after such a crash needs a durable record of the prepare: issue 10.
"""

from __future__ import annotations

import signal
import threading
import time
from types import SimpleNamespace

import pytest
import urllib3

from guestd.client import Application, Vote
from harness.proxies import start_proxy
from novaproxy.api import negotiation
from tests.faults.test_redis_agent import reboot

pytestmark = pytest.mark.faults

MARGIN = 3.0


def test_a_proxy_killed_mid_prepare_frees_the_server_within_a_lease(_fault_stack, fault_stack,
                                                                    fault_flavor):
    server, _ = fault_stack.boot("proxy-crash", fault_flavor)
    preparing = threading.Event()

    def notice(n):
        if n.phase == "prepare":
            preparing.set()
            time.sleep(1.0)

    app = Application("db", on_vote=lambda n: Vote.reject("replication in progress"),
                      on_notice=notice,
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
            if marker != negotiation.IN_PROGRESS:
                break
            assert time.monotonic() - killed < negotiation.LOCK_LEASE + MARGIN, message
            time.sleep(0.2)
        freed = time.monotonic() - killed
        print(f"server free {freed:.1f}s after the proxy was killed")
        assert (status, marker) == (409, "action-rejected") and "replication" in message
        assert freed < negotiation.LOCK_LEASE + MARGIN
    finally:
        doomed.stop()
        app.stop()
