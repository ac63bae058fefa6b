"""The agent's side of vCPU scaling against real Redis and a real (host-process) qemu-ga.

The host-process qemu-ga reads the test machine's own vCPUs and refuses
``guest-set-vcpus`` (the harness's block list), so a change here always fails in
the "guest": what these tests show is everything around it. An apply is carried
out only under its operation's record and its proxy's lock, writes its plan
first, and a failure settles the record as refused with the guest's error and
leaves the vCPUs as they were. The vm tier shows vCPUs really changing.
"""

from __future__ import annotations

import json
import uuid

import pytest

from guestd import protocol
from novaproxy import audit, operations, redis_schema, replies, scaling
from novaproxy.agent import hypervisor
from novaproxy.agent.scale import Scaler

HOST = "scalehost"


@pytest.fixture
def guest(make_guest, redis_client):
    guest = make_guest()
    guest.scaler = Scaler(redis_client, HOST, hypervisor.QgaSocketDirectory(
        make_guest.socket_dir))
    return guest


def request(guest, phase, event=scaling.VCPUS, timeout=5.0, **details):
    return protocol.request(uuid.uuid4().hex, guest.instance, event, phase, timeout, details)


def forwarding(redis_client, guest, owner="tok-1"):
    """An operation record as the proxy leaves it before the apply, under its lock."""
    op = {"id": uuid.uuid4().hex, "event": scaling.SCALE_DOWN, "state": operations.FORWARDING,
          "prepared": True, "owner": owner, "details": {"online": [0, 1], "target": 1}}
    redis_schema.record_operation(redis_client, guest.instance, op, 60, host=HOST)
    redis_client.set(redis_schema.lock_key(guest.instance), owner, px=60000)
    return op


def stored(redis_client, guest, op_id):
    return json.loads(redis_client.hget(redis_schema.records.ops_key(guest.instance), op_id))


def test_the_guests_vcpus_are_read_by_its_own_view(guest):
    reply = guest.scaler.answer(request(guest, scaling.READ), 5)
    assert reply.outcome == protocol.ACCEPT and reply.host == HOST
    assert 0 in reply.data["online"] and set(reply.data["online"]) <= set(reply.data["plugged"])
    assert guest.scaler.online(guest.instance) == frozenset(reply.data["online"])


def test_a_guest_without_an_agent_cannot_be_read(guest, make_guest, redis_client):
    missing = Scaler(redis_client, HOST, hypervisor.QgaSocketDirectory(make_guest.socket_dir))
    reply = missing.answer(protocol.request("r1", str(uuid.uuid4()), scaling.VCPUS,
                                            scaling.READ, 5), 5)
    assert reply.outcome == replies.UNREACHABLE
    assert missing.online(str(uuid.uuid4())) is None


def test_an_apply_outside_its_operation_changes_nothing(guest, redis_client):
    op = forwarding(redis_client, guest)
    cases = [
        {"change": [1], "owner": "tok-2", operations.OPERATION_DETAIL: op["id"]},  # not its lock
        {"change": [1], "owner": "tok-1", operations.OPERATION_DETAIL: "other"},  # no record
        {"change": [1], "owner": "tok-2"},  # no record: the lock alone, someone else's
    ]
    for details in cases:
        reply = guest.scaler.answer(request(guest, scaling.APPLY, scaling.SCALE_DOWN,
                                            **details), 5)
        assert reply.outcome == protocol.REJECT, details
        assert "is not being carried out any more" in reply.detail
    assert stored(redis_client, guest, op["id"]) == op  # not even its plan written


def test_cpu_0_and_vcpus_in_the_wrong_state_are_refused_before_anything(guest, redis_client):
    op = forwarding(redis_client, guest)
    for event, change in ((scaling.SCALE_DOWN, [0]), (scaling.SCALE_UP, [0])):
        reply = guest.scaler.answer(request(guest, scaling.APPLY, event, change=change,
                                            owner="tok-1",
                                            **{operations.OPERATION_DETAIL: op["id"]}), 5)
        assert reply.outcome == protocol.REJECT and "cannot be brought" in reply.detail
    assert guest.scaler.answer(request(guest, scaling.APPLY, scaling.SCALE_DOWN, change=[]),
                               5).outcome == replies.INVALID
    assert stored(redis_client, guest, op["id"])["state"] == operations.FORWARDING


def test_a_change_the_guest_refuses_is_refused_with_its_error(guest, redis_client):
    before = guest.scaler.online(guest.instance)
    if len(before) < 2:
        pytest.skip("the test machine has one CPU online")
    cpu = max(before)
    op = forwarding(redis_client, guest)
    reply = guest.scaler.answer(request(guest, scaling.APPLY, scaling.SCALE_DOWN,
                                        timeout=10, change=[cpu], owner="tok-1",
                                        **{operations.OPERATION_DETAIL: op["id"]}), 10)
    assert reply.outcome == protocol.REJECT
    assert "guest-set-vcpus" in reply.detail  # the guest agent's own refusal
    record = stored(redis_client, guest, op["id"])
    assert record["state"] == operations.REFUSED and record["why"] == reply.detail
    assert record["change"] == [cpu] and record["after"] == sorted(before - {cpu})  # the plan
    assert guest.scaler.online(guest.instance) == before
    assert redis_schema.vcpus_of(redis_client, guest.instance) is None
    events = [fields for _, fields in redis_schema.read_events(redis_client, 50)
              if fields.get("kind") == audit.SCALE and fields["instance"] == guest.instance]
    assert events and events[-1]["outcome"] == "failed"


def test_after_a_boot_nothing_is_done_without_a_recorded_count(guest, redis_client):
    before = guest.scaler.online(guest.instance)
    guest.scaler.booted(guest.instance)  # no record: not even a guest agent call fails
    redis_schema.record_vcpus(redis_client, guest.instance, len(before), len(before), "op")
    guest.scaler.booted(guest.instance)  # the count holds: nothing to change
    assert guest.scaler.online(guest.instance) == before
    assert not [f for _, f in redis_schema.read_events(redis_client, 50)
                if f.get("kind") == audit.SCALE and f["instance"] == guest.instance]


def test_a_count_is_not_taken_back_during_an_operation(guest, redis_client, caplog):
    redis_schema.record_vcpus(redis_client, guest.instance, 1, 2, "op")
    redis_client.set(redis_schema.lock_key(guest.instance), "tok-1", px=60000)
    with caplog.at_level("INFO", logger="novaproxy.agent.scale"):
        guest.scaler.booted(guest.instance)
    assert "an operation is being negotiated" in caplog.text
    assert "not re-applied:" not in caplog.text  # the guest was not even asked
    redis_client.delete(redis_schema.lock_key(guest.instance))
    before = guest.scaler.online(guest.instance)
    with caplog.at_level("INFO", logger="novaproxy.agent.scale"):
        guest.scaler.booted(guest.instance)  # now it tries: the host-process qemu-ga refuses
    if len(before) > 1:
        assert "the recorded 1 vCPU(s) online not re-applied" in caplog.text
        assert "guest-set-vcpus" in caplog.text
    assert guest.scaler.online(guest.instance) == before
