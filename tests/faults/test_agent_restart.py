"""The host agent killed mid-prepare and restarted: the application prepares once.

The restarted agent takes the unacknowledged prepare up again from Redis and
writes it into guestd's spool a second time; guestd remembers the request id
(guestd/once.py) and gives the repeat the first delivery's answer, so the
application's irrevocable prepare runs once and the caller still gets Nova's 202.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from guestd.client import Application, Vote
from harness.processes import wait_for
from tests.faults.test_redis_agent import reboot

pytestmark = pytest.mark.faults

PREPARING = 2.5  # seconds the application takes to prepare: the agent dies meanwhile
PREPARE_TIMEOUT = 10.0  # etc/paste.ini's, which the fault stack's proxy serves
MARGIN = 3.0


def test_an_agent_killed_mid_prepare_and_restarted_prepares_once(fault_stack, fault_flavor):
    server, host = fault_stack.boot("agent-restart", fault_flavor)
    heard, preparing = [], threading.Event()

    def notice(n):
        heard.append((n.event, n.phase))
        if n.phase == "prepare":
            preparing.set()
            time.sleep(PREPARING)

    app = Application("db", on_vote=lambda n: Vote.accept(), on_notice=notice,
                      socket_path=fault_stack.guests[server.id].guestd_socket).start()
    try:
        assert app.registered.wait(5)
        answer: dict = {}
        caller = threading.Thread(target=lambda: answer.update(
            result=reboot(fault_stack, server.id)), daemon=True)
        caller.start()
        assert preparing.wait(10), "the prepare never reached the application"
        fault_stack.agents[host].signal(signal.SIGKILL)
        fault_stack.restart_agent(host)
        caller.join(PREPARE_TIMEOUT + MARGIN + 10)
        status, _, message, took = answer["result"]
        assert status == 202, message
        assert took < 4.0 + PREPARE_TIMEOUT + MARGIN  # the vote deadline, the prepare's
        wait_for(lambda: "reboot" in fault_stack.instance_actions(server.id), 10,
                 "Nova's reboot")
        assert heard.count(("reboot", "prepare")) == 1, heard
    finally:
        app.stop()
