"""The foundation story with real clients: python-novaclient and openstacksdk pointed at
novaproxy-api over HTTP, the real Nova API behind it, real agents, qemu-ga and guestd."""

import pytest
import urllib3
from novaclient import exceptions

from guestd.client import Vote


@pytest.fixture
def vm(stack, negotiated_flavor, recorder):
    server, host = stack.boot("story", negotiated_flavor)
    return server, stack.guests[server.id]


def test_nack_reaches_novaclient_as_conflict_with_the_reason(stack, vm, recorder):
    server, guest = vm
    recorder(guest, name="db", verdict=lambda n: Vote.reject("replication in progress"))
    with pytest.raises(exceptions.Conflict) as raised:
        stack.nova().servers.reboot(server.id)
    assert "db: replication in progress" in str(raised.value)
    assert "action-rejected" in str(raised.value)
    assert stack.nova(direct=True).servers.get(server.id).status == "ACTIVE"
    assert "reboot" not in stack.instance_actions(server.id)


def test_ack_lets_nova_reboot_and_stop(stack, vm, recorder):
    server, guest = vm
    rec = recorder(guest, name="db")
    stack.nova().servers.reboot(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    # The end notice follows once Nova is done and the guest answers again.
    assert rec.wait_for(3) == [("reboot", "vote"), ("reboot", "prepare"), ("reboot", "end")]
    stack.nova().servers.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    assert rec.seen[3:] == [("stop", "vote"), ("stop", "prepare")]
    assert {"reboot", "stop"} <= set(stack.instance_actions(server.id))


def test_every_application_is_asked_and_every_reason_kept(stack, vm, recorder):
    server, guest = vm
    recorder(guest, name="web")
    recorder(guest, name="db", verdict=lambda n: Vote.reject("replication in progress"))
    guest.add_hook("backup", "#!/bin/sh\necho 'backup running'\nexit 1\n")
    with pytest.raises(exceptions.Conflict) as raised:
        stack.nova().servers.stop(server.id)
    assert "db: replication in progress" in str(raised.value)
    assert "backup: backup running" in str(raised.value)


def test_openstacksdk_sees_the_same_conflict(stack, vm, recorder):
    import openstack.connection
    from openstack import exceptions as sdk_exceptions

    server, guest = vm
    recorder(guest, name="db", verdict=lambda n: Vote.reject("leader election"))
    conn = openstack.connection.Connection(
        auth_type="admin_token", auth={"endpoint": stack.proxy_url + "/v2.1",
                                       "token": "admin:demo"},
        compute_endpoint_override=stack.proxy_url + "/v2.1")
    with pytest.raises(sdk_exceptions.ConflictException, match="leader election"):
        conn.compute.reboot_server(server.id, "HARD")


def test_plain_server_and_listing_pass_through_untouched(stack, plain_flavor, recorder):
    server, _ = stack.boot("plain-story", plain_flavor)
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("never asked"))
    stack.nova().servers.reboot(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.seen == []
    headers = {"X-Auth-Token": "admin:demo", "OpenStack-API-Version": "compute 2.96",
               "Host": "cloud.example:8774"}
    direct = urllib3.request("GET", stack.nova_url + "/v2.1/servers/detail", headers=headers)
    via = urllib3.request("GET", stack.proxy_url + "/v2.1/servers/detail", headers=headers)
    assert (via.status, via.data) == (direct.status, direct.data)
    listed = {s.id for s in stack.nova().servers.list()}
    assert server.id in listed
