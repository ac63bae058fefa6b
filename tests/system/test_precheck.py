"""A request Nova will refuse goes to Nova un-negotiated: the caller gets Nova's own
error and the guest hears nothing. In-process (Nova's own context and enforcer),
standalone behind keystonemiddleware's auth_token (Nova's rules through
oslo.policy), and standalone with no validated identity (states and bodies only).
"""

import json
import uuid

import pytest
import urllib3

from guestd.client import Vote

pytestmark = pytest.mark.system

MIGRATE = {"migrate": None}


def post(stack, server_id, token, body):
    resp = urllib3.request("POST", f"{stack.proxy_url}/v2.1/servers/{server_id}/action",
                           body=json.dumps(body).encode(),
                           headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    return resp.status, json.loads(resp.data or b"null")


def test_in_process_a_members_migration_gets_novas_403_and_the_guest_hears_nothing(
        in_process, recorder):
    flavor = in_process.flavor(f"pc-{uuid.uuid4().hex[:6]}", {"guest:negotiation": "true"})
    server, _ = in_process.boot("pc-member", flavor)
    rec = recorder(in_process.guests[server.id])
    status, body = post(in_process, server.id, "member:demo", MIGRATE)
    assert status == 403 and "forbidden" in body
    assert rec.seen == [] and "migrate" not in in_process.instance_actions(server.id)
    # Anything the member may do is still negotiated; so is the admin's migration.
    assert post(in_process, server.id, "member:demo", {"reboot": {"type": "SOFT"}})[0] == 202
    in_process.wait_for_server(server.id, "ACTIVE")
    assert post(in_process, server.id, "admin:demo", MIGRATE)[0] == 202
    assert [seen for seen in rec.seen if seen[1] in ("vote", "prepare")] == [
        ("reboot", "vote"), ("reboot", "prepare"), ("migrate", "vote"), ("migrate", "prepare")]


def test_in_process_a_bad_body_and_a_wrong_state_are_novas_to_answer(in_process, recorder):
    flavor = in_process.flavor(f"pc-{uuid.uuid4().hex[:6]}", {"guest:negotiation": "true"})
    server, _ = in_process.boot("pc-state", flavor)
    rec = recorder(in_process.guests[server.id], verdict=lambda n: Vote.accept())
    status, body = post(in_process, server.id, "admin:demo", {"reboot": {"type": "GENTLE"}})
    assert status == 400 and "GENTLE" in body["badRequest"]["message"]
    assert rec.seen == []
    in_process.nova().servers.stop(server.id)  # in-process, every call is negotiated
    in_process.wait_for_server(server.id, "SHUTOFF")
    rec.seen.clear()
    status, body = post(in_process, server.id, "admin:demo", {"os-stop": None})
    assert status == 409 and "conflictingRequest" in body
    assert rec.seen == []


def test_standalone_behind_auth_token_a_members_migration_is_never_negotiated(
        stack, negotiated_flavor, recorder, behind_auth_token):
    server, _ = stack.boot("pc-authtoken", negotiated_flavor)
    rec = recorder(stack.guests[server.id])
    url = f"/v2.1/servers/{server.id}/action"

    def post_as(token, body):
        return behind_auth_token.post(url, json.dumps(body), status="*", headers={
            "X-Auth-Token": token, "Content-Type": "application/json"})

    member = post_as("member:demo", MIGRATE)
    assert member.status_int == 403 and "forbidden" in member.json
    assert rec.seen == [] and "migrate" not in stack.instance_actions(server.id)
    assert post_as("admin:demo", MIGRATE).status_int == 202
    assert rec.seen[:2] == [("migrate", "vote"), ("migrate", "prepare")]


def test_standalone_without_identity_still_leaves_bodies_and_states_to_nova(
        stack, negotiated_flavor, recorder):
    server, _ = stack.boot("pc-no-identity", negotiated_flavor)
    rec = recorder(stack.guests[server.id])
    assert post(stack, server.id, "member:demo", {"reboot": {"type": "GENTLE"}})[0] == 400
    stack.nova(direct=True).servers.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    # The member's own look-up shows the vm and task states (OS-EXT-STS:*).
    assert post(stack, server.id, "member:demo", {"os-stop": None})[0] == 409
    assert rec.seen == []


def test_standalone_without_identity_cannot_know_the_callers_authorisation(
        stack, negotiated_flavor, recorder):
    server, _ = stack.boot("pc-unknown-caller", negotiated_flavor)
    rec = recorder(stack.guests[server.id])
    # The guest is asked, and told to abort when Nova refuses.
    assert post(stack, server.id, "member:demo", MIGRATE)[0] == 403
    assert rec.seen[:2] == [("migrate", "vote"), ("migrate", "prepare")]
