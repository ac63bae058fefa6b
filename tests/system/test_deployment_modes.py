"""Both deployment modes, and the admin skip switch in each.

In-process: the filter inside nova-api's own pipeline (deploy/nova-api-paste.ini
loaded by the real Nova fixture), after keystonecontext, so it trusts Nova's
own request context. Standalone: the filter in novaproxy-api; the switch is
trusted only behind keystonemiddleware's auth_token.
"""

import json
import uuid

import pytest
from novaclient import exceptions

from guestd.client import Vote
from harness.audit import audits, wait_audits
from harness.processes import wait_for
from novaproxy import audit, headers

SKIP = {headers.SKIP_HEADER: "true"}
RECOVERY = {headers.SKIP_HEADER: headers.RECOVERY}


@pytest.fixture(scope="module")
def in_process_flavor(in_process):
    return in_process.flavor("in-process-negotiated", {"guest:negotiation": "true"})


def test_in_process_nack_and_ack(in_process, in_process_flavor, recorder):
    server, _ = in_process.boot("in-process", in_process_flavor)
    verdict = {"vote": Vote.reject("in-process says no")}
    rec = recorder(in_process.guests[server.id], verdict=lambda n: verdict["vote"])
    with pytest.raises(exceptions.Conflict, match="in-process says no"):
        in_process.nova().servers.reboot(server.id)
    assert "reboot" not in in_process.instance_actions(server.id)
    verdict["vote"] = Vote.accept()
    in_process.nova().servers.stop(server.id)
    in_process.wait_for_server(server.id, "SHUTOFF")
    assert rec.seen == [("reboot", "vote"), ("stop", "vote"), ("stop", "prepare")]
    in_process.nova().servers.start(server.id)
    in_process.wait_for_server(server.id, "ACTIVE")
    assert rec.wait_for(5)[3:] == [("stop", "end"), ("start", "end")]
    # The record named Nova's own request (read from the request id middleware's environ
    # key inside nova-api), the one its instance action carries.
    stop, = [a for a in in_process.nova(direct=True).instance_action.list(server.id)
             if a.action == "stop"]
    closed = wait_audits(in_process, server.id, audit.OPERATION, "stop")[-1]
    assert (closed["outcome"], closed["nova_request"]) == ("end-delivered", stop.request_id)


def raw_action(stack, server_id, token, body, extra=None):
    import urllib3

    return urllib3.request("POST", f"{stack.proxy_url}/v2.1/servers/{server_id}/action",
                           body=json.dumps(body).encode(),
                           headers={"X-Auth-Token": token, "Content-Type": "application/json",
                                    **(extra or {})})


def test_in_process_recovery_is_never_voted_on(in_process, recorder):
    """The agent reaches Nova through the filter here (its [nova] endpoint is nova-api):
    its hard reboot of a hung guest goes through unasked, although the guest's
    application would NACK anything, because the agent marks it and its identity is
    a validated admin."""
    flavor = in_process.flavor(f"in-process-monitored-{uuid.uuid4().hex[:6]}",
                               {"guest:negotiation": "true", "guest:monitoring": "true"})
    server, _ = in_process.boot("recover", flavor)
    rec = recorder(in_process.guests[server.id], verdict=lambda n: Vote.reject("never"))
    in_process.wait_settled(server.id)
    in_process.guests[server.id].hang()
    wait_for(lambda: "reboot" in in_process.instance_actions(server.id), 30,
             "the monitor's hard reboot")
    in_process.guests[server.id].unhang()
    assert rec.seen == []  # no vote, no prepare
    skip, = audits(in_process, server.id, audit.SKIP)
    assert skip["event"] == "reboot" and skip["why"].startswith("recovery by ")


def test_in_process_recovery_mark_from_a_member_is_ignored(in_process, in_process_flavor,
                                                          recorder):
    server, _ = in_process.boot("fake-recovery", in_process_flavor)
    rec = recorder(in_process.guests[server.id], verdict=lambda n: Vote.reject("stay up"))
    member = raw_action(in_process, server.id, "member:demo", {"reboot": {"type": "HARD"}},
                        RECOVERY)
    assert member.status == 409 and b"stay up" in member.data
    assert rec.seen == [("reboot", "vote")] and audits(in_process, server.id, audit.SKIP) == []


def test_in_process_admin_skip_is_honoured_for_admins_only(in_process, in_process_flavor,
                                                           recorder):
    server, _ = in_process.boot("skip", in_process_flavor)
    rec = recorder(in_process.guests[server.id], verdict=lambda n: Vote.reject("stay up"))
    member = raw_action(in_process, server.id, "member:demo", {"reboot": {"type": "SOFT"}}, SKIP)
    assert member.status == 409 and b"stay up" in member.data  # stripped, negotiated
    admin = raw_action(in_process, server.id, "admin:demo", {"reboot": {"type": "SOFT"}}, SKIP)
    assert admin.status == 202
    assert rec.seen == [("reboot", "vote")]  # the admin's request never asked the guest
    assert audits(in_process, server.id, audit.SKIP)


def test_standalone_without_auth_token_never_trusts_the_switch(stack, negotiated_flavor,
                                                              recorder):
    server, _ = stack.boot("no-authtoken", negotiated_flavor)
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("stay up"))
    # Even identity headers cannot fake an admin: only a validated identity counts.
    forged = {**SKIP, "X-Roles": "admin", "X-Identity-Status": "Confirmed"}
    resp = raw_action(stack, server.id, "admin:demo", {"reboot": {"type": "SOFT"}}, forged)
    assert resp.status == 409 and rec.seen == [("reboot", "vote")]


def test_standalone_admin_skip_behind_auth_token(stack, negotiated_flavor, recorder,
                                                 behind_auth_token):
    server, _ = stack.boot("authtoken", negotiated_flavor)
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("stay up"))
    body = json.dumps({"reboot": {"type": "SOFT"}})
    url = f"/v2.1/servers/{server.id}/action"
    member = behind_auth_token.post(url, body, status="*", headers={
        "X-Auth-Token": "member:demo", "Content-Type": "application/json", **SKIP})
    assert member.status_int == 409
    admin = behind_auth_token.post(url, body, status="*", headers={
        "X-Auth-Token": "admin:demo", "Content-Type": "application/json", **SKIP})
    assert admin.status_int == 202
    assert rec.seen == [("reboot", "vote")]


def test_standalone_recovery_mark_behind_auth_token(stack, negotiated_flavor, recorder,
                                                    behind_auth_token):
    """The agent's mark is honoured for a validated service (or admin) identity, and
    only with its own value: a service user's plain skip is still negotiated."""
    server, _ = stack.boot("authtoken-recovery", negotiated_flavor)
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("stay up"))
    body = json.dumps({"reboot": {"type": "HARD"}})
    url = f"/v2.1/servers/{server.id}/action"

    def post(token, extra):
        return behind_auth_token.post(url, body, status="*", headers={
            "X-Auth-Token": token, "Content-Type": "application/json", **extra}).status_int

    assert post("member:demo", RECOVERY) == 409
    assert post("nova-agent:demo", SKIP) == 409
    assert post("nova-agent:demo", RECOVERY) == 202
    assert rec.seen == [("reboot", "vote"), ("reboot", "vote")]
    skip, = audits(stack, server.id, audit.SKIP)
    assert skip["why"] == "recovery by user nova-agent project demo"
