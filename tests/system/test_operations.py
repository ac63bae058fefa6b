"""Every lifecycle operation through novaproxy-api with real python-novaclient, against
the real Nova API: the phases the guest saw, in order, and Nova's resulting state.

The harness plays each VM as Nova drives it (powered off, frozen, moved to the
other host), so end notices arrive only once the guest answers again, on the
host it now runs on.
"""

import pytest
from novaclient import exceptions

from guestd.client import Vote
from harness.audit import wait_audits
from harness.stack import IMAGE
from novaproxy import audit
from tests.system.helpers import host_of


@pytest.fixture
def vm(stack, negotiated_flavor, recorder):
    server, host = stack.boot("op", negotiated_flavor)
    return server, host, recorder(stack.guests[server.id])


def test_stop_then_start(stack, vm):
    server, _, rec = vm
    stack.nova().servers.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    stack.nova().servers.start(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    # The prepared stop is closed once the guest runs again to hear it, before the start's
    # own end notice.
    assert rec.wait_for(4) == [("stop", "vote"), ("stop", "prepare"), ("stop", "end"),
                               ("start", "end")]
    # The record named Nova's own request (from its answer), the one its instance action
    # carries.
    stop, = [a for a in stack.nova(direct=True).instance_action.list(server.id)
             if a.action == "stop"]
    closed = wait_audits(stack, server.id, audit.OPERATION, "stop")[-1]
    assert (closed["outcome"], closed["nova_request"]) == ("end-delivered", stop.request_id)


@pytest.mark.parametrize("kind", ["SOFT", "HARD"])
def test_reboot(stack, vm, kind):
    server, _, rec = vm
    details = []
    rec.verdict = lambda n: details.append(n.details) or Vote.accept()
    stack.nova().servers.reboot(server.id, reboot_type=kind)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.wait_for(3) == [("reboot", "vote"), ("reboot", "prepare"), ("reboot", "end")]
    # Each notice names its operation, so applications can pair a prepare with its end.
    assert [{k: v for k, v in d.items() if k != "operation"} for d in details] == [
        {"type": kind}]
    assert len(details[0]["operation"]) == 32


@pytest.mark.parametrize("begin, status, end", [("pause", "PAUSED", "unpause"),
                                                ("suspend", "SUSPENDED", "resume")])
def test_pause_and_suspend_pairs(stack, vm, begin, status, end):
    server, _, rec = vm
    getattr(stack.nova().servers, begin)(server.id)
    stack.wait_for_server(server.id, status)
    getattr(stack.nova().servers, end)(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    # The prepared operation ends once the guest runs again, before the one that resumed it.
    assert rec.wait_for(4) == [(begin, "vote"), (begin, "prepare"), (begin, "end"),
                               (end, "end")]


@pytest.mark.parametrize("finish, event", [("confirm_resize", "resize-confirm"),
                                           ("revert_resize", "resize-revert")])
def test_resize_then_confirm_or_revert(stack, vm, finish, event):
    server, host, rec = vm
    bigger = stack.flavor(f"bigger-{event}", {"guest:negotiation": "true"})
    bigger.ram, bigger.vcpus = 1024, 2
    details = []
    rec.verdict = lambda n: details.append(n.details) or Vote.accept()
    stack.nova().servers.resize(server.id, bigger)
    stack.wait_for_server(server.id, "VERIFY_RESIZE")
    assert rec.wait_for(3) == [("resize", "vote"), ("resize", "prepare"), ("resize", "end")]
    assert details[0]["flavor"]["id"] == bigger.id
    assert details[0]["from"] == {"vcpus": 1, "ram": 512, "disk": 1}
    getattr(stack.nova().servers, finish)(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.wait_for(4)[3:] == [(event, "end")]


def test_cold_migrate_ends_on_the_destination(stack, vm):
    server, source, rec = vm
    stack.nova().servers.migrate(server.id)
    stack.wait_for_server(server.id, "VERIFY_RESIZE")
    destination = host_of(stack, server.id)
    assert destination != source
    assert rec.wait_for(3) == [("migrate", "vote"), ("migrate", "prepare"), ("migrate", "end")]
    delivered = wait_audits(stack, server.id, audit.OPERATION, "migrate")
    assert delivered[-1]["outcome"] == "end-delivered"
    assert delivered[-1]["host"] == destination  # the destination's agent sent it
    stack.nova().servers.confirm_resize(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.wait_for(4)[3:] == [("resize-confirm", "end")]


def test_live_migrate_ends_on_the_destination(stack, vm):
    server, source, rec = vm
    stack.nova().servers.live_migrate(server.id, host=None, block_migration="auto")
    stack.wait_for_server(server.id, "ACTIVE")
    assert host_of(stack, server.id) != source
    assert rec.wait_for(3) == [("live-migrate", "vote"), ("live-migrate", "prepare"),
                               ("live-migrate", "end")]


def test_live_migrate_refused_by_nova_is_aborted(stack, vm):
    server, _, rec = vm
    with pytest.raises(exceptions.Forbidden):  # a member may not live-migrate
        stack.nova("member:demo").servers.live_migrate(server.id, host=None,
                                                       block_migration="auto")
    assert rec.wait_for(3) == [("live-migrate", "vote"), ("live-migrate", "prepare"),
                               ("live-migrate", "abort")]


def test_shelve_then_unshelve(stack, vm):
    server, _, rec = vm
    stack.nova().servers.shelve(server.id)
    stack.wait_for_server(server.id, "SHELVED_OFFLOADED")
    stack.nova().servers.unshelve(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.wait_for(4) == [("shelve", "vote"), ("shelve", "prepare"), ("shelve", "end"),
                               ("unshelve", "end")]


def test_rebuild_is_a_notice_with_an_end(stack, vm):
    server, _, rec = vm
    stack.nova().servers.rebuild(server.id, IMAGE)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.wait_for(2) == [("rebuild", "prepare"), ("rebuild", "end")]


def test_delete_is_a_notice(stack, vm):
    server, _, rec = vm
    stack.nova().servers.delete(server.id)
    assert rec.wait_for(1) == [("delete", "prepare")]


def test_crash_dump_is_a_notice(stack, vm):
    server, _, rec = vm
    stack.nova().servers.trigger_crash_dump(server.id)
    assert rec.wait_for(2) == [("crash-dump", "prepare"), ("crash-dump", "end")]


@pytest.mark.parametrize("call", [
    lambda nova, sid, flavor: nova.servers.stop(sid),
    lambda nova, sid, flavor: nova.servers.reboot(sid),
    lambda nova, sid, flavor: nova.servers.pause(sid),
    lambda nova, sid, flavor: nova.servers.suspend(sid),
    lambda nova, sid, flavor: nova.servers.resize(sid, flavor),
    lambda nova, sid, flavor: nova.servers.migrate(sid),
    lambda nova, sid, flavor: nova.servers.live_migrate(sid, None, "auto"),
    lambda nova, sid, flavor: nova.servers.shelve(sid),
], ids=["stop", "reboot", "pause", "suspend", "resize", "migrate", "live-migrate", "shelve"])
def test_every_vetoable_operation_can_be_rejected(stack, vm, plain_flavor, call):
    server, _, rec = vm
    rec.verdict = lambda n: Vote.reject(f"not now: {n.event}")
    with pytest.raises(exceptions.Conflict) as raised:
        call(stack.nova(), server.id, plain_flavor)
    event = rec.seen[0][0]
    assert rec.seen == [(event, "vote")]
    assert f"recorder: not now: {event}" in str(raised.value)
    assert stack.nova(direct=True).servers.get(server.id).status == "ACTIVE"


@pytest.mark.parametrize("call, event", [
    (lambda nova, sid: nova.server_migrations.live_migrate_force_complete(sid, 4242),
     "live-migrate-complete"),
    (lambda nova, sid: nova.server_migrations.live_migration_abort(sid, 4242),
     "live-migrate-abort"),
], ids=["force-complete", "abort"])
def test_live_migration_calls_nova_will_refuse_never_reach_the_guest(stack, vm, call, event):
    # The fake virt driver finishes a live migration at once, so there is never one in
    # progress to act on: the server is not MIGRATING, Nova is sure to refuse (the
    # precheck reads its state), and the guest hears nothing of it.
    server, _, rec = vm
    with pytest.raises(exceptions.ClientException):
        call(stack.nova(), server.id)
    assert rec.seen == []  # a prepare would have come before Nova's answer
