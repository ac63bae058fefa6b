"""The agent's Nova client: its config section, and its calls against the real Nova API."""

import time
import uuid

import pytest

from harness.processes import free_port, wait_for
from harness.stack import ADMIN_TOKEN
from novaproxy.agent import nova as nova_client
from novaproxy.agent.nova import ConfigError, NovaRefused, NovaUnavailable


@pytest.mark.parametrize("section, error", [
    ({}, "[nova] auth_type: set it"),
    ({"auth_type": "nope"}, "[nova] auth_type = 'nope': no such keystoneauth1 plugin"),
    ({"auth_type": "password", "username": "agent", "password": "pw"},
     "[nova] auth_type = password needs: auth_url"),
    ({"auth_type": "admin_token", "endpoint": "http://nova/v2.1", "token": "t", "pasword": "x"},
     "[nova] unknown option(s) for auth_type admin_token: pasword"),
    ({"auth_type": "admin_token", "endpoint": "http://nova/v2.1", "token": "t", "timeout": "x"},
     "[nova] timeout: must be a number of seconds"),
])
def test_config_errors_name_the_section_and_what_to_fix(section, error):
    with pytest.raises(ConfigError) as exc:
        nova_client.from_section(section)
    assert str(exc.value).startswith(error)
    assert "pw" not in str(exc.value)


def test_a_nova_that_cannot_be_reached_is_unavailable():
    nova = nova_client.from_section({"auth_type": "admin_token", "token": ADMIN_TOKEN,
                                     "endpoint": f"http://127.0.0.1:{free_port()}/v2.1"})
    with pytest.raises(NovaUnavailable) as exc:
        nova.reboot(str(uuid.uuid4()))
    assert exc.value.status is None and ADMIN_TOKEN not in str(exc.value)


def test_a_200_that_is_not_json_is_unavailable():
    # What a misconfigured endpoint (a load balancer's HTML page) looks like.
    from harness.recording_http import RecordingEndpoint

    page = RecordingEndpoint(default=(200, "<html>maintenance</html>"))
    try:
        nova = nova_client.from_section({"auth_type": "admin_token", "token": ADMIN_TOKEN,
                                         "endpoint": page.url})
        for call in (lambda: nova.server(str(uuid.uuid4())), lambda: nova.servers_on_host("c1")):
            with pytest.raises(NovaUnavailable, match="not a JSON object"):
                call()
    finally:
        page.stop()


@pytest.fixture(scope="module")
def nova(stack):
    """Built the way the stack's agents build theirs from their [nova] section."""
    return nova_client.from_section({"auth_type": "admin_token",
                                     "endpoint": f"{stack.nova_url}/v2.1",
                                     "token": ADMIN_TOKEN})


def test_hard_reboot_is_a_reboot_in_nova_and_also_starts_a_stopped_server(
        stack, nova, plain_flavor):
    server, _ = stack.boot(f"reboot-{uuid.uuid4().hex[:6]}", plain_flavor, with_guest=False)
    nova.reboot(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert "reboot" in stack.instance_actions(server.id)

    nova.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    with pytest.raises(NovaRefused) as soft:  # only HARD is allowed from SHUTOFF
        nova.reboot(server.id, hard=False)
    assert soft.value.status == 409
    nova.reboot(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    assert stack.instance_actions(server.id).count("reboot") == 2


def test_stop_leaves_the_server_shutoff_and_stopping_it_again_is_refused(
        stack, nova, plain_flavor):
    server, _ = stack.boot(f"stop-{uuid.uuid4().hex[:6]}", plain_flavor, with_guest=False)
    nova.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    assert "stop" in stack.instance_actions(server.id)
    with pytest.raises(NovaRefused) as exc:
        nova.stop(server.id)
    assert exc.value.status == 409
    assert exc.value.message == (f"Cannot 'stop' instance {server.id} while it is in "
                                 "vm_state stopped")
    assert str(exc.value).startswith(f"os-stop of server {server.id}: HTTP 409: ")


def test_an_unknown_server_is_refused(nova):
    with pytest.raises(NovaRefused) as exc:
        nova.reboot(str(uuid.uuid4()))
    assert exc.value.status == 404


def test_servers_on_host_reads_every_page(stack, nova):
    """4 servers on 2 hosts: some host has 2 or more, so pages of 1 must be followed."""
    flavor = stack.flavor(f"listed-{uuid.uuid4().hex[:6]}", {"guest:negotiation": "true"})
    booted = {}
    for i in range(4):
        server, host = stack.boot(f"listed-{i}", flavor, with_guest=False)
        booted[server.id] = host
    admin = stack.nova(direct=True)
    for host in stack.computes:
        placed = {s.id for s in admin.servers.list(
            search_opts={"all_tenants": 1, "host": host})}
        assert {i for i, h in booted.items() if h == host} <= placed
        listed = nova.servers_on_host(host, page_size=1)
        assert sorted(s["id"] for s in listed) == sorted(placed)
        assert all(s["OS-EXT-SRV-ATTR:host"] == host for s in listed)
        assert sorted(s["id"] for s in nova.servers_on_host(host)) == sorted(placed)
    ours = [s for h in stack.computes for s in nova.servers_on_host(h) if s["id"] in booted]
    assert len(ours) == len(booted)
    assert {s["flavor"]["extra_specs"].get("guest:negotiation") for s in ours} == {"true"}


def test_servers_on_an_empty_host(nova):
    assert nova.servers_on_host(f"no-such-host-{uuid.uuid4().hex[:6]}") == []


def test_instance_actions_and_their_events(stack, nova, plain_flavor):
    server, _ = stack.boot(f"actions-{uuid.uuid4().hex[:6]}", plain_flavor, with_guest=False)
    before = time.time() - 5
    nova.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    stop, = [a for a in nova.actions(server.id, before) if a["action"] == "stop"]
    assert stop["request_id"].startswith("req-") and stop["message"] is None
    assert nova.actions(server.id, time.time() + 60) == []  # nothing changed since then
    # The status is saved before the compute event that saved it is marked finished.
    events = wait_for(lambda: [e for e in nova.action_events(server.id, stop["request_id"])
                               if e["event"] == "compute_stop_instance" and e["finish_time"]],
                      10, "the stop's compute event finished")
    assert events[0]["result"] == "Success"
    assert nova.action_events(server.id, "req-" + str(uuid.uuid4())) == []
    assert nova.actions(str(uuid.uuid4()), before) == []
    assert nova.action_events(str(uuid.uuid4()), stop["request_id"]) == []


def test_server_groups_and_their_members(stack, nova, plain_flavor):
    admin = stack.nova(direct=True)
    name = f"pair-{uuid.uuid4().hex[:6]}"
    group = admin.server_groups.create(name, policy="soft-anti-affinity")
    try:
        members = [stack.boot(f"{name}-{i}", plain_flavor, with_guest=False, group=group.id)[0]
                   for i in range(2)]
        loner, _ = stack.boot(f"{name}-alone", plain_flavor, with_guest=False)
        for server in members:
            read = nova.server_with_groups(server.id)
            assert read["server_groups"] == [group.id] and read["id"] == server.id
            assert "extra_specs" in read["flavor"]  # what messaging_on reads, in one read
        assert nova.server_with_groups(loner.id)["server_groups"] == []
        assert nova.server_with_groups(str(uuid.uuid4())) is None
        read = nova.server_group(group.id)
        assert read == {"id": group.id, "name": name, "policy": "soft-anti-affinity",
                        "members": read["members"]}
        assert sorted(read["members"]) == sorted(s.id for s in members)
        assert nova.server_group(str(uuid.uuid4())) is None
    finally:
        admin.server_groups.delete(group.id)
