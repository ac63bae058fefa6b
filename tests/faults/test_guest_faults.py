"""The guest's own processes failing while its application deliberates: qemu-ga or guestd
killed or frozen mid-vote. The client's answer follows the policy within the deadlines
plus a margin; a failed component never yields a vote the application did not give (an
accept it never sent, or silence passed off as consent); once the process is back, the
next negotiation is normal.

On the session's real stack (redis-server, Nova's API, agents in qga-socket mode,
novaproxy-api, qemu-ga + guestd per server): the stack's own proxy (``silence`` and
``unreachable`` both accept) and one more with both reject (:mod:`harness.proxies`).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid

import pytest
from novaclient import exceptions

from guestd.client import Vote
from harness.processes import wait_for
from harness.proxies import start_proxy

pytestmark = [pytest.mark.system, pytest.mark.faults]

# The flavor's vote deadline; the application deliberates THINK seconds of it, and the
# fault strikes meanwhile.
VOTE_TIMEOUT = 5.0
THINK = 2.0
# The stack's paste (etc/paste.ini): a vote that went on is followed by the prepare,
# which a failed component leaves unanswered too.
PREPARE_TIMEOUT = 10.0
# Beyond the deadlines: the proxy's, the agent's and Nova's own work on a loaded
# two-core machine.
MARGIN = 3.0
REASON = "replication in progress"


def kill_qemu_ga(guest) -> None:
    guest.qemu_ga.signal(signal.SIGKILL)  # the harness starts a new one at once


def restart_qemu_ga(guest) -> None:
    """The harness restarts qemu-ga (as systemd would): wait until the new one listens."""
    wait_for(lambda: guest.qemu_ga.restarts and guest.qemu_ga_listening(), 10,
             "qemu-ga restarted")


def freeze_guestd(guest) -> None:
    guest.guestd.signal(signal.SIGSTOP)


def thaw_guestd(guest) -> None:
    guest.guestd.signal(signal.SIGCONT)


def kill_guestd(guest) -> None:
    guest.guestd.signal(signal.SIGKILL)


# fault name -> (strike, bring back)
FAULTS = {
    "qemu-ga killed": (kill_qemu_ga, restart_qemu_ga),
    "qemu-ga frozen": (lambda guest: guest.hang(), lambda guest: guest.unhang()),
    "guestd killed": (kill_guestd, lambda guest: guest.restart_guestd()),
    "guestd frozen": (freeze_guestd, thaw_guestd),
}


@pytest.fixture(scope="module")
def strict_proxy(stack):
    with start_proxy(stack, "guest-faults-strict", silence="reject",
                     unreachable="reject") as started:
        yield started


@pytest.fixture(scope="module")
def flavor(stack):
    return stack.flavor(f"guest-faults-{uuid.uuid4().hex[:6]}", {
        "guest:negotiation": "true", "guest:vote_timeout": str(VOTE_TIMEOUT)})


class Deliberating:
    """An application that thinks THINK seconds, then says NACK; ``voting`` is set when
    a vote arrives."""

    def __init__(self, recorder, guest) -> None:
        self.voting = threading.Event()
        self.recorder = recorder(guest, name="db", verdict=self._verdict)

    def _verdict(self, notice):
        self.voting.set()
        time.sleep(THINK)
        return Vote.reject(REASON)


def reboot_during_fault(nova, server, app: Deliberating, strike) -> tuple:
    """Reboot through ``nova``; ``strike`` once the application is deliberating.
    (HTTP status, the error or None, seconds)."""
    outcome: dict = {}

    def ask() -> None:
        started = time.monotonic()
        try:
            nova.servers.reboot(server)
            outcome["result"] = (202, None)
        except exceptions.ClientException as exc:
            outcome["result"] = (exc.code, exc)
        outcome["took"] = time.monotonic() - started

    client = threading.Thread(target=ask)
    client.start()
    assert app.voting.wait(VOTE_TIMEOUT), "the vote never reached the application"
    strike()
    client.join(VOTE_TIMEOUT + PREPARE_TIMEOUT + 2 * MARGIN)
    assert not client.is_alive(), "no answer for the client"
    return (*outcome["result"], outcome["took"])


def decisions(stack, instance: str) -> list:
    """Why the stack's proxy let votes on ``instance`` go on (its log's word)."""
    with open(os.path.join(stack.workdir, "proxy.log"), errors="replace") as f:
        return re.findall(rf"reboot of {instance} accepted in \d+ ms: (.*)", f.read())


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("strict", [False, True], ids=["accept", "reject"])
def test_a_guest_process_failing_mid_vote_never_votes_and_never_holds_the_client(
        stack, strict_proxy, flavor, recorder, fault, strict):
    strike, bring_back = FAULTS[fault]
    server, _ = stack.boot("guest-faults", flavor)
    guest = stack.guests[server.id]
    stack.caught_up()
    app = Deliberating(recorder, guest)
    nova = strict_proxy.nova() if strict else stack.nova()

    code, error, took = reboot_during_fault(nova, server, app, lambda: strike(guest))
    if strict:
        # Neither silence nor an unreachable guest lets Nova act.
        assert code == 409, (code, error)
        assert "action-rejected" in str(error)
        assert took < VOTE_TIMEOUT + MARGIN, took
        assert "reboot" not in stack.instance_actions(server.id)
    else:
        # The policy lets the reboot go on, or the application's NACK got through; what
        # the proxy heard was never the guest's consent.
        assert took < VOTE_TIMEOUT + PREPARE_TIMEOUT + MARGIN, took
        if code == 202:
            why = decisions(stack, server.id)
            assert len(why) == 1 and why[0] != "the guest accepted", why
            stack.wait_for_server(server.id, "ACTIVE")
            assert stack.instance_actions(server.id).count("reboot") == 1
        else:
            assert code == 409 and f"db: {REASON}" in str(error), (code, error)
            assert "reboot" not in stack.instance_actions(server.id)
    print(f"\n{fault}, {'strict' if strict else 'default'} policy: HTTP {code} in {took:.2f}s"
          f" ({error})")

    # Back again: the next negotiation hears the application's NACK.
    bring_back(guest)
    wait_for(app.recorder.app.registered.is_set, 10, "the application registered again")
    reboots = stack.instance_actions(server.id).count("reboot")
    app.voting.clear()
    started = time.monotonic()
    with pytest.raises(exceptions.Conflict) as raised:
        nova.servers.reboot(server)
    took = time.monotonic() - started
    assert f"db: {REASON}" in str(raised.value)
    assert took < VOTE_TIMEOUT + MARGIN, took
    assert stack.instance_actions(server.id).count("reboot") == reboots
    print(f"after {fault} ended: HTTP 409 in {took:.2f}s")



def test_a_dead_guestd_follows_unreachable(stack, strict_proxy, flavor, recorder):
    """guestd killed (crashed) before the vote, and not yet back: its application, which
    would say NACK, cannot be asked. That is `unreachable` (here reject), not a guest
    without guestd. (Until guestd-ctl told a crashed guestd from an absent one, it said
    not-negotiating and Nova rebooted the server in 2.2 s.)"""
    server, _ = stack.boot("guest-faults", flavor)
    guest = stack.guests[server.id]
    stack.caught_up()
    app = Deliberating(recorder, guest)
    kill_guestd(guest)
    wait_for(lambda: not app.recorder.app.registered.is_set(), 10, "the application gone")
    started = time.monotonic()
    try:
        strict_proxy.nova().servers.reboot(server)
        code, error = 202, None
    except exceptions.ClientException as exc:
        code, error = exc.code, exc
    took = time.monotonic() - started
    print(f"\nguestd dead before the vote, strict policy: HTTP {code} in {took:.2f}s ({error})")
    assert took < VOTE_TIMEOUT + MARGIN, took
    assert code == 409, (code, error)
    assert "action-rejected" in str(error) and "could not be asked" in str(error)
    assert "reboot" not in stack.instance_actions(server.id)
