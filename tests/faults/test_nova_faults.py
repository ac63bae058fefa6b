"""Nova failing behind novaproxy-api: after the guest voted and prepared, the client hears
the failure within the negotiation's deadlines plus the forward app's read timeout, and
the guest hears exactly one closing notice decided by what Nova did, not by the answer
the proxy got: abort when Nova never acted (no instance action within ``outcome_wait``),
end when it did act after all. A look-up that fails follows ``unreachable``.

On the session's real stack (redis-server, Nova's API, agents, qemu-ga + guestd). Each
test reboots through a novaproxy-api of its own (:mod:`harness.proxies`) whose forward
app reaches Nova through a :class:`harness.fault_proxy.FaultProxy`; the fault hits only
the request it matches (the forwarded action, or the server look-up), the rest pass.
"""

from __future__ import annotations

import time
import uuid

import pytest
from novaclient import exceptions

from harness import fault_proxy
from harness.audit import wait_audits
from harness.fault_proxy import FaultProxy, Seen
from harness.proxies import start_proxy
from novaproxy import audit

pytestmark = [pytest.mark.system, pytest.mark.faults]

# The flavor's vote deadline, and the proxies' prepare deadline and forward read timeout.
VOTE_TIMEOUT = 4.0
PREPARE_TIMEOUT = 4.0
READ_TIMEOUT = 3.0
# Nova's delay within the read timeout; and past it, within the outcome wait.
SLOW = 1.5
LATE = READ_TIMEOUT + 2.0
# How long the agent waits for Nova's instance action before it calls a request whose
# answer was lost "never acted on".
OUTCOME_WAIT = 5.0
# Beyond the deadlines: the proxy's, the agent's and Nova's own work on a loaded
# two-core machine.
MARGIN = 3.0
# What an accepting guest hears when the operation is called off after its prepare.
ABORTED = [("reboot", "vote"), ("reboot", "prepare"), ("reboot", "abort")]
# How long to keep listening for a notice that must not come (a second abort, an end).
QUIET = 2.0


@pytest.fixture(scope="module")
def nova_faults(stack):
    faults = FaultProxy(stack.nova_url)
    yield faults
    faults.stop()


@pytest.fixture(scope="module")
def proxy(stack, nova_faults):
    """novaproxy-api reaching Nova through the fault proxy; policy defaults (accept)."""
    with start_proxy(stack, "nova-faults", upstream=nova_faults.url,
                     forward={"read_timeout": READ_TIMEOUT},
                     prepare_timeout=PREPARE_TIMEOUT, outcome_wait=OUTCOME_WAIT) as started:
        yield started


@pytest.fixture(scope="module")
def strict_proxy(stack, nova_faults):
    """The same with ``unreachable = reject``."""
    with start_proxy(stack, "nova-faults-strict", upstream=nova_faults.url,
                     forward={"read_timeout": READ_TIMEOUT}, prepare_timeout=PREPARE_TIMEOUT,
                     outcome_wait=OUTCOME_WAIT, unreachable="reject") as started:
        yield started


@pytest.fixture(scope="module")
def flavor(stack):
    return stack.flavor(f"nova-faults-{uuid.uuid4().hex[:6]}", {
        "guest:negotiation": "true", "guest:vote_timeout": str(VOTE_TIMEOUT)})


@pytest.fixture
def faults(nova_faults):
    """The fault proxy, passing and with no record; passing again after the test."""
    nova_faults.set(fault_proxy.PASS)
    nova_faults.clear()
    yield nova_faults
    nova_faults.set(fault_proxy.PASS)


@pytest.fixture
def server(stack, flavor, recorder):
    """A negotiated server whose guest runs an accepting application."""
    server, _ = stack.boot("nova-faults", flavor)
    return server, recorder(stack.guests[server.id])


def action(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/action")


def reboot(nova, server) -> tuple:
    """(HTTP status, the error or None, seconds) of a reboot through ``nova``."""
    started = time.monotonic()
    try:
        nova.servers.reboot(server)
    except exceptions.ClientException as exc:
        code, error = exc.code, exc
    else:
        code, error = 202, None
    took = time.monotonic() - started
    print(f"\nreboot: HTTP {code} in {took:.2f}s ({error})")
    return code, error, took


def heard_exactly(app, expected: list, within: float) -> list:
    """What ``app`` heard once ``expected`` arrived (within ``within`` seconds) and nothing
    more came for a while."""
    app.wait_for(len(expected), timeout=within)
    return app.wait_for(len(expected) + 1, timeout=QUIET)


@pytest.mark.parametrize("fault, status", [(fault_proxy.ERROR, 500), (fault_proxy.RESET, 502)])
def test_nova_failing_the_prepared_action_aborts_it(stack, proxy, faults, server, fault,
                                                    status):
    """Nova's own 500 reaches the client; a reset connection is the forward app's 502.
    Either way Nova did nothing, but a 500 may come after Nova acted, so the outcome is
    left to Nova's evidence: with no instance action within the outcome wait, the guest,
    already prepared, hears one abort."""
    server, app = server
    faults.set(fault, match=action)
    code, error, took = reboot(proxy.nova(), server)
    answered = time.monotonic()
    assert code == status
    if fault == fault_proxy.ERROR:
        assert "fault proxy: injected error" in str(error)
    else:
        assert "is unreachable" in str(error)
    assert took < VOTE_TIMEOUT + PREPARE_TIMEOUT + MARGIN, took
    assert heard_exactly(app, ABORTED, OUTCOME_WAIT + MARGIN) == ABORTED
    assert app.heard_at[2] - answered >= OUTCOME_WAIT - 1.0  # Nova's evidence was awaited
    assert [s for s in faults.requests if s.mode != fault_proxy.PASS] == [
        Seen("POST", f"/v2.1/servers/{server.id}/action", fault)]
    assert "reboot" not in stack.instance_actions(server.id)


def test_nova_hanging_past_the_read_timeout_and_never_acting_aborts_it(
        stack, proxy, faults, server):
    """The forward app gives up after its read timeout and answers 502; Nova never got
    the request, so no instance action shows within the outcome wait: abort."""
    server, app = server
    faults.set(fault_proxy.HANG, match=action)
    code, error, took = reboot(proxy.nova(), server)
    answered = time.monotonic()
    assert code == 502
    assert "is unreachable" in str(error)
    assert READ_TIMEOUT <= took < READ_TIMEOUT + VOTE_TIMEOUT + PREPARE_TIMEOUT + MARGIN, took
    assert heard_exactly(app, ABORTED, OUTCOME_WAIT + MARGIN) == ABORTED
    assert app.heard_at[2] - answered >= OUTCOME_WAIT - 1.0
    assert "reboot" not in stack.instance_actions(server.id)


def test_nova_acting_after_the_read_timeout_ends_it(stack, proxy, faults, server):
    """Nova gets the request only after the forward app gave up (502 to the client), and
    reboots the server: its instance action shows within the outcome wait, so the guest
    hears end, not abort. (It was told abort, for a reboot that then happened.)"""
    server, app = server
    faults.set(fault_proxy.DELAY, delay=LATE, match=action)
    code, error, took = reboot(proxy.nova(), server)
    assert code == 502
    assert READ_TIMEOUT <= took < LATE, took
    ended = [("reboot", "vote"), ("reboot", "prepare"), ("reboot", "end")]
    assert heard_exactly(app, ended, LATE + OUTCOME_WAIT + 30) == ended
    assert stack.instance_actions(server.id).count("reboot") == 1
    record = wait_audits(stack, server.id, audit.OPERATION, "reboot")[-1]
    assert record["outcome"] == "end-delivered"


@pytest.mark.parametrize("fault, status, wait", [
    (fault_proxy.ERROR, 500, 0.0), (fault_proxy.RESET, 502, 0.0),
    (fault_proxy.HANG, 502, READ_TIMEOUT)])
def test_a_failed_look_up_follows_unreachable(stack, proxy, strict_proxy, faults, server,
                                              fault, status, wait):
    """Whether the server is negotiated cannot be read from Nova (it answers 500, resets,
    or hangs past the read timeout: the forward app's 502): with ``unreachable = accept``
    the reboot goes on unasked and the log says why; with ``reject`` it is a 409 naming
    the reason, and Nova never sees the action."""
    server, app = server
    look_up = f"/v2.1/servers/{server.id}"
    faults.set(fault, match=lambda method, path: method == "GET" and path == look_up)
    said = f"Nova answered HTTP {status} to" if status == 500 else "Nova could not be reached for"
    why = f"whether it is negotiated is unknown: {said} GET servers/"

    code, error, took = reboot(proxy.nova(), server)
    assert (code, error) == (202, None)
    assert wait <= took < wait + MARGIN, took
    stack.wait_for_server(server.id, "ACTIVE")
    assert stack.instance_actions(server.id).count("reboot") == 1
    assert (f"reboot of {server.id}: {why}{server.id}; proceeding (unreachable = accept)"
            in proxy.log())

    faults.clear()
    code, error, took = reboot(strict_proxy.nova(), server)
    assert code == 409
    assert "action-rejected" in str(error)
    assert why in str(error)
    assert wait <= took < wait + MARGIN, took
    assert [s.method for s in faults.requests] == ["GET"]  # the look-up, never the action
    assert stack.instance_actions(server.id).count("reboot") == 1
    assert app.seen == []  # neither reboot was negotiated: no vote, no notice


def test_a_retry_is_held_back_until_the_unknown_outcome_is_decided(stack, proxy, faults,
                                                                   server):
    """Nova's 500 leaves it unknown whether the reboot happened; the caller's retry is put
    to the guest only once that is decided (a 409 marked negotiation-in-progress until
    then), so the guest hears the first reboot's abort before the second one's vote."""
    server, app = server
    faults.set(fault_proxy.ERROR, match=action)
    assert reboot(proxy.nova(), server)[0] == 500
    faults.set(fault_proxy.PASS)
    code, error, _ = reboot(proxy.nova(), server)
    assert code == 409
    assert "negotiation-in-progress" in str(error) and "is not closed yet" in str(error)
    deadline = time.monotonic() + OUTCOME_WAIT + MARGIN
    while code != 202:
        assert time.monotonic() < deadline, error
        time.sleep(0.5)
        code, error, _ = reboot(proxy.nova(), server)
    assert app.wait_for(6, timeout=30) == ABORTED + [
        ("reboot", "vote"), ("reboot", "prepare"), ("reboot", "end")]
