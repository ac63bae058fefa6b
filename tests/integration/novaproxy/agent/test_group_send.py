"""What the sender's agent makes of outbox entries, on a real redis-server: a status
entry answers each member's Nova status and monitor state; an accepted message leaves
its sender, recipients and size, never its body, in the group's record for operators."""

import uuid

from guestd import group_protocol as gp
from novaproxy import flavor, groups, redis_schema
from novaproxy.agent import group_send, membership

GID, EPOCH = "g-send", "0123456789abcdef"
A, B, C = (str(uuid.UUID(int=n)) for n in (21, 22, 23))


class Directory:
    """Nova's answers: A and B take messages, C's flavor does not turn messaging on."""

    def server_with_groups(self, instance):
        specs = {flavor.GROUP_MESSAGING: "true"} if instance != C else {}
        return {"id": instance, "status": "SHUTOFF" if instance == C else "ACTIVE",
                "OS-EXT-SRV-ATTR:host": "h1" if instance == A else "h2",
                "flavor": {"extra_specs": specs}, "metadata": {}, "server_groups": [GID]}

    def server_group(self, gid):
        return {"id": gid, "name": "pair", "policy": "anti-affinity", "members": [A, B, C]}


def sender(client):
    return group_send.Sender(client, membership.Membership(client, Directory()),
                             lambda: redis_schema.redis_time(client))


def test_a_status_entry_answers_each_members_nova_status_and_monitor_state(redis_client):
    redis_schema.publish_monitor(redis_client, {B: {"state": "suspect", "since": "1"}}, 60)
    (result,) = sender(redis_client).take(A, EPOCH, [gp.status_entry(1, "db")])
    assert result["status"] == gp.ACCEPTED
    status = result["group"]
    assert (status["group"], status["name"], status["policy"]) == (
        GID, "pair", "anti-affinity")
    assert status["members"] == {
        A: {"status": "ACTIVE", "host": "h1", "monitor": "", "messaging": True},
        B: {"status": "ACTIVE", "host": "h2", "monitor": "suspect", "messaging": True},
        C: {"status": "SHUTOFF", "host": "h2", "monitor": "", "messaging": False}}


def test_an_accepted_message_is_recorded_for_operators_without_its_body(redis_client):
    body = {"secret": "x" * 100}
    (result,) = sender(redis_client).take(A, EPOCH, [gp.message_entry(1, "db", "*", body)])
    assert result["status"] == gp.ACCEPTED and result["members"] == {B: groups.PENDING}
    (sent,) = redis_schema.sent_messages(redis_client, GID)
    assert sent["id"] == result["message"] and (sent["from"], sent["to"]) == (A, "*")
    assert int(sent["size"]) == gp.body_size(body)
    assert "secret" not in repr(redis_client.xrange(redis_schema.sent_key(GID)))
