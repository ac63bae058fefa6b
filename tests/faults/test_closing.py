"""Every prepare is closed exactly once, in order, when Nova takes its time or fails late.

On the session's real stack (two compute hosts: redis-server, Nova's API, agents,
qemu-ga + guestd), through the stack's own novaproxy-api. Each guest runs a
:class:`harness.pairing.PairingApp`, which checks the pairing itself: every
prepare followed by exactly one end or abort of the same operation, before any
newer operation's prepare.
"""

from __future__ import annotations

import uuid

import pytest

from harness.audit import wait_audits
from harness.pairing import PairingApp
from harness.processes import wait_for
from novaproxy import audit, redis_schema
from tests.system.helpers import host_of

pytestmark = [pytest.mark.system, pytest.mark.faults]

# Long enough for a loaded two-core machine to bring every notice.
CLOSED = 30.0


@pytest.fixture(scope="module")
def flavor(stack):
    return stack.flavor(f"closing-{uuid.uuid4().hex[:6]}", {"guest:negotiation": "true"})


@pytest.fixture
def vm(stack, flavor):
    server, host = stack.boot("closing", flavor)
    app = PairingApp(stack.guests[server.id])
    yield server, host, app
    app.stop()


def heard(app) -> list:
    return [(h.event, h.phase) for h in app.pairing.heard()]


def closed(app, count: int) -> list:
    """What ``app`` heard once it heard ``count`` notices and no prepare is open."""
    app.wait_closed(CLOSED)
    app.wait_for(count, CLOSED)
    app.pairing.assert_paired()
    return heard(app)


def test_a_live_migration_nova_accepts_then_fails_for_lack_of_a_host_is_aborted(stack, vm):
    """Nova answers 202, then its conductor finds no host (the only other one is
    disabled): the server settles back to ACTIVE where it was, which is in a live
    migration's "done" statuses — but the server did not move (and where Nova marks the
    action failed, that says so too), so the prepared guest hears abort, not end."""
    server, source, app = vm
    nova = stack.nova(direct=True)
    other, = [s for s in nova.services.list(binary="nova-compute") if s.host != source]
    nova.services.disable(other.id)
    try:
        stack.nova().servers.live_migrate(server.id, host=None, block_migration="auto")
        assert closed(app, 3) == [("live-migrate", "vote"), ("live-migrate", "prepare"),
                                  ("live-migrate", "abort")]
    finally:
        nova.services.enable(other.id)
    assert host_of(stack, server.id) == source
    assert "live-migration" in stack.instance_actions(server.id)
    aborted = wait_audits(stack, server.id, audit.OPERATION, "live-migrate")[-1]
    assert aborted["outcome"] == "abort-delivered"
    assert "did not move" in aborted["why"] or "action failed" in aborted["why"]


def test_resize_then_confirm_at_once_ends_each_in_order(stack, vm):
    """The confirm follows as soon as Nova shows VERIFY_RESIZE, before or after the
    agent told the guest: the resize's end comes first either way, then the confirm's.
    (The resize's record was once dropped as "superseded", its end never sent.)"""
    server, _, app = vm
    bigger = stack.flavor(f"closing-bigger-{uuid.uuid4().hex[:6]}",
                          {"guest:negotiation": "true"})
    stack.nova().servers.resize(server.id, bigger)
    stack.wait_for_server(server.id, "VERIFY_RESIZE")
    stack.nova().servers.confirm_resize(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert closed(app, 4) == [("resize", "vote"), ("resize", "prepare"), ("resize", "end"),
                              ("resize-confirm", "end")]
    assert [e["outcome"] for e in wait_audits(stack, server.id, audit.OPERATION, "resize")] == [
        "end-delivered"]


def test_live_migrate_then_reboot_at_once_closes_the_migration_first(stack, vm):
    """The reboot's vote reaches the guest only after the live migration's end, though
    the reboot is asked for the moment the new host's agent serves the server."""
    server, source, app = vm
    stack.nova().servers.live_migrate(server.id, host=None, block_migration="auto")
    stack.wait_for_server(server.id, "ACTIVE")
    destination = host_of(stack, server.id)
    assert destination != source
    client = redis_schema.connect(stack.redis.url)
    wait_for(lambda: redis_schema.route_of(client, server.id) == destination, CLOSED,
             "the destination's agent serving the server")
    stack.nova().servers.reboot(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert closed(app, 6) == [
        ("live-migrate", "vote"), ("live-migrate", "prepare"), ("live-migrate", "end"),
        ("reboot", "vote"), ("reboot", "prepare"), ("reboot", "end")]
