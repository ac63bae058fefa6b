"""The agents' group-messaging relay between real Nova (a real server group), real Redis
and real qemu-ga + guestd guests: an outbox written in one guest becomes receipts for
it and messages for its peers, checked by the host at every step.

The outbox is written here as guestd writes it (``docs/group-messaging.md``); guestd
answers the receipt and message requests as notices and hands them to a recording
application, so what the guests are told is seen as they see it.
"""

import json
import os
import threading
import time
import uuid

import pytest

from guestd import group_protocol as gp
from guestd.client import Application
from harness.guest import OUTBOX_FILE
from harness.processes import wait_for
from novaproxy import flavor, groups, redis_schema

EPOCH = "00112233aabbccdd"


class Heard:
    """A guest application that records the group requests guestd hands it."""

    def __init__(self, guest):
        self.notices = []
        self._lock = threading.Lock()
        self.app = Application(f"heard-{uuid.uuid4().hex[:6]}", events=[gp.GROUP],
                               on_notice=self._notice,
                               socket_path=guest.guestd_socket).start()
        assert self.app.registered.wait(5)

    def _notice(self, notice):
        with self._lock:
            self.notices.append(notice)

    def of(self, phase):
        with self._lock:
            return [n for n in self.notices if n.phase == phase]


@pytest.fixture
def heard():
    apps = []

    def make(guest):
        apps.append(Heard(guest))
        return apps[-1]

    yield make
    for h in apps:
        h.app.stop()


@pytest.fixture
def group(stack):
    admin = stack.nova(direct=True)
    made = admin.server_groups.create(f"relay-{uuid.uuid4().hex[:6]}",
                                      policy="soft-anti-affinity")
    yield made.id
    admin.server_groups.delete(made.id)


@pytest.fixture
def stack_redis(stack):
    client = redis_schema.connect(stack.redis.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def messaging_flavor(stack):
    return stack.flavor(f"messaging-{uuid.uuid4().hex[:6]}", {flavor.GROUP_MESSAGING: "true"})


def write_outbox(guest, *entries, epoch=EPOCH):
    path = os.path.join(guest.workdir, OUTBOX_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump({"v": 1, "epoch": epoch, "messages": list(entries)}, f)
    os.replace(path + ".tmp", path)


def message(seq, to="*", body="hello"):
    return {"seq": seq, "kind": "message", "to": to, "app": "db", "body": body}


def results_of(notices):
    return {r["seq"]: r for n in notices for r in n.details["results"]}


def test_messages_reach_the_members_that_take_them_and_every_entry_gets_a_result(
        stack, group, messaging_flavor, plain_flavor, heard, stack_redis):
    (a, _), (b, _) = (stack.boot(f"m-{i}", messaging_flavor, group=group) for i in "ab")
    c, _ = stack.boot("m-plain", plain_flavor, group=group)
    d, _ = stack.boot("m-outside", messaging_flavor)
    ears = {s.id: heard(stack.guests[s.id]) for s in (a, b, c, d)}
    write_outbox(stack.guests[a.id],
                 message(1, body={"hello": 1, "from": d.id}),  # a spoofed "from" is data
                 message(2, to=b.id, body="just you"),
                 message(3, to=c.id), message(4, to=d.id), message(5, to=a.id),
                 {"seq": 6, "kind": "status", "app": "db"})

    receipts = wait_for(lambda: len(results_of(ears[a.id].of(gp.RECEIPT))) == 6
                        and ears[a.id].of(gp.RECEIPT), 20, "the receipts")
    results = results_of(receipts)
    assert {n.details["epoch"] for n in receipts} == {EPOCH}
    assert max(n.details["acked"] for n in receipts) == 6
    assert results[1]["status"] == results[2]["status"] == gp.ACCEPTED
    assert results[1]["members"] == {b.id: groups.PENDING}
    assert results[2]["members"] == {b.id: groups.PENDING}
    assert [results[n]["reason"] for n in (3, 4, 5)] == [
        groups.PEER_NOT_ENABLED, groups.NOT_A_MEMBER, groups.NOT_A_MEMBER]
    status = results[6]["group"]
    assert status["group"] == group and set(status["members"]) == {a.id, b.id, c.id}
    assert status["members"][c.id]["messaging"] is False
    assert status["members"][b.id]["status"] == "ACTIVE"

    got = wait_for(lambda: len(ears[b.id].of(gp.MESSAGE)) == 2
                   and ears[b.id].of(gp.MESSAGE), 20, "b's messages")
    assert [(n.details["from"], n.details["seq"], n.details["body"]) for n in got] == [
        (a.id, 1, {"hello": 1, "from": d.id}), (a.id, 2, "just you")]
    assert [n.details["id"] for n in got] == [results[s]["message"] for s in (1, 2)]
    assert all(n.details["group"] == group and n.details["epoch"] == EPOCH for n in got)
    for seq in (1, 2):
        wait_for(lambda s=seq: redis_schema.report(
            stack_redis, group, results[s]["message"], time.time()) == {
                b.id: groups.DELIVERED}, 10, "the delivery report")
    time.sleep(1.0)  # the outbox is read again meanwhile: nothing is taken twice
    assert len(ears[b.id].of(gp.MESSAGE)) == 2
    assert not ears[c.id].of(gp.MESSAGE) and not ears[d.id].of(gp.MESSAGE)
    assert len(results_of(ears[a.id].of(gp.RECEIPT))) == 6


def test_a_vm_in_no_group_and_a_hostile_outbox_get_refusals_or_nothing(
        stack, messaging_flavor, heard, stack_redis):
    loner, _ = stack.boot("m-loner", messaging_flavor)
    ear = heard(stack.guests[loner.id])
    write_outbox(stack.guests[loner.id], message(1), message(2))
    receipts = wait_for(lambda: len(results_of(ear.of(gp.RECEIPT))) == 2
                        and ear.of(gp.RECEIPT), 20, "the refusals")
    assert {r["reason"] for r in results_of(receipts).values()} == {groups.NOT_IN_GROUP}
    # Garbage, then a huge file: nothing is taken, nothing breaks.
    path = os.path.join(stack.guests[loner.id].workdir, OUTBOX_FILE)
    with open(path, "wb") as f:
        f.write(b"{not json")
    time.sleep(1.0)
    with open(path, "wb") as f:
        f.write(b" " * (gp.MAX_OUTBOX_BYTES + 10))
    time.sleep(1.0)
    # A new epoch (guestd restarted) is read afresh once the outbox is valid again.
    write_outbox(stack.guests[loner.id], message(1), epoch="ffeeddccbbaa9988")
    wait_for(lambda: redis_schema.outbox_progress(stack_redis, loner.id)[:2]
             == ("ffeeddccbbaa9988", 1), 20, "the new epoch taken")
    second = wait_for(lambda: ear.of(gp.RECEIPT)[1:], 10, "the new epoch's receipt")
    assert [(n.details["epoch"], n.details["acked"]) for n in second] == [
        ("ffeeddccbbaa9988", 1)]
