"""The precheck's tables and decisions, without Nova: microversions, rules, states."""

import json
import logging

import pytest

from novaproxy.api import microversion, nova_rules, precheck
from novaproxy.api._request import NegotiationRequest
from novaproxy.api.classify import Operation, classify

SERVER_ID = "2054cb7a-6a4e-4b5e-8f8c-0d3c4f1f6d2a"


def server(vm="active", task=None, **extra):
    """A server as GET /servers/{id} at 2.47 shows it to its project's member."""
    return {"id": SERVER_ID, "status": "ACTIVE", "tenant_id": "demo", "user_id": "alice",
            "OS-EXT-STS:vm_state": vm, "OS-EXT-STS:task_state": task, "locked": False,
            "OS-SRV-USG:launched_at": "2026-11-30T05:00:00.000000", **extra}


def op(body):
    return classify("POST", f"/v2.1/servers/{SERVER_ID}/action", json.dumps(body).encode())


def request(body, version=None, path=f"/v2.1/servers/{SERVER_ID}/action", **environ):
    headers = {"Content-Type": "application/json"}
    if version:
        headers["OpenStack-API-Version"] = f"compute {version}"
    req = NegotiationRequest.blank(path, method="POST", body=json.dumps(body).encode(),
                                   headers=headers, environ=environ)
    return req


@pytest.mark.parametrize("headers, path, expected", [
    ({}, "/v2.1/servers/x/action", (2, 1)),
    ({"OpenStack-API-Version": "compute 2.60"}, "/v2.1/servers/x/action", (2, 60)),
    ({"OpenStack-API-Version": "placement 1.2, compute 2.91"}, "/servers/x/action", (2, 91)),
    ({"OpenStack-API-Version": "placement 1.2", "X-OpenStack-Nova-API-Version": "2.17"},
     "/v2.1/servers/x/action", (2, 17)),
    ({"X-OpenStack-Nova-API-Version": "2.56"}, "/v2.1/servers/x/action", (2, 56)),
    ({"OpenStack-API-Version": "compute latest"}, "/v2.1/servers/x/action", microversion.LATEST),
    ({"OpenStack-API-Version": "compute 2.x"}, "/v2.1/servers/x/action", None),
    ({"OpenStack-API-Version": "compute 2.60"}, "/v2/servers/x/action", (2, 0)),
    ({"OpenStack-API-Version": "compute\t2.17"}, "/v2.1/servers/x/action", (2, 17)),
    ({"OpenStack-API-Version": "compute 2.1, compute 2.17"}, "/v2.1/servers/x", (2, 17)),
    ({"X-OpenStack-Nova-API-Version": "2.1, 2.17"}, "/v2.1/servers/x/action", (2, 17)),
    ({"OpenStack-API-Version": "compute LATEST"}, "/v2.1/servers/x/action", None),
])
def test_requested_version_reads_the_headers_as_nova_does(headers, path, expected):
    assert microversion.requested_version(headers, path, {}) == expected


def test_a_legacy_v2_request_is_2_0_whatever_it_asks():
    environ = {"openstack.legacy_v2": True}
    headers = {"OpenStack-API-Version": "compute 2.60"}
    assert microversion.requested_version(headers, "/servers/x/action", environ) == (2, 0)


def rules(body, version=(2, 1), srv=None):
    operation = op(body)
    return precheck.rules_to_check(nova_rules.RULES[operation.action], operation, version,
                                   srv or server())


PROJECT = {"project_id": "demo"}
OWNER = {"user_id": "alice", "project_id": "demo"}


def test_each_action_is_checked_against_its_own_rule_and_target():
    assert rules({"reboot": {"type": "SOFT"}}) == [("os_compute_api:servers:reboot", PROJECT)]
    assert rules({"os-stop": None}) == [("os_compute_api:servers:stop", OWNER)]
    assert rules({"migrate": None}) == [("os_compute_api:os-migrate-server:migrate", PROJECT)]


def test_a_named_host_switches_to_the_host_rule_from_the_microversion_that_reads_it():
    body = {"migrate": {"host": "compute2"}}
    assert rules(body, (2, 55)) == [("os_compute_api:os-migrate-server:migrate", PROJECT)]
    assert rules(body, (2, 56)) == [("os_compute_api:os-migrate-server:migrate:host", PROJECT)]
    live = {"os-migrateLive": {"host": "compute2", "block_migration": "auto"}}
    assert rules(live, (2, 25)) == [
        ("os_compute_api:os-migrate-server:migrate_live:host", PROJECT)]
    no_host = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    assert rules(no_host, (2, 25)) == [("os_compute_api:os-migrate-server:migrate_live",
                                        PROJECT)]


def test_unshelve_to_a_host_needs_both_rules():
    body = {"unshelve": {"host": "compute2"}}
    assert rules(body, (2, 90)) == [("os_compute_api:os-shelve:unshelve", PROJECT)]
    assert rules(body, (2, 91)) == [("os_compute_api:os-shelve:unshelve", PROJECT),
                                    ("os_compute_api:os-shelve:unshelve_to_host", OWNER)]


def test_without_the_servers_owner_there_is_no_target_to_check():
    srv = server()
    del srv["tenant_id"]
    assert rules({"reboot": {"type": "SOFT"}}, srv=srv) is None


def refused(body, srv, is_admin=False):
    return precheck.state_refusal(op(body), srv, is_admin)


def test_vm_state_outside_the_allowed_ones_is_refused():
    assert "needs vm_state active or error" in refused({"os-stop": None}, server("stopped"))
    assert refused({"os-stop": None}, server("error")) is None
    assert refused({"os-start": None}, server("stopped")) is None
    assert refused({"os-migrateLive": {"host": None, "block_migration": "auto"}},
                   server("paused")) is None
    assert "vm_state" in refused({"migrate": None}, server("paused"))


def test_a_task_under_way_refuses_what_must_start_idle():
    assert "task_state is powering-off" in refused({"pause": None}, server(task="powering-off"))
    assert refused({"pause": None}, server()) is None


def test_reboot_states_depend_on_its_type():
    rebooting = server(task="rebooting")
    assert "task_state" in refused({"reboot": {"type": "SOFT"}}, rebooting)
    assert refused({"reboot": {"type": "HARD"}}, rebooting) is None
    assert "vm_state" in refused({"reboot": {"type": "soft"}}, server("stopped"))
    assert refused({"reboot": {"type": "HARD"}}, server("stopped")) is None
    assert refused({"reboot": {}}, server("stopped")) is None  # Nova's schema answers that


def test_a_lock_binds_everyone_but_admins_and_an_unknown_caller_decides_nothing():
    locked = server(locked=True)
    assert refused({"reboot": {"type": "SOFT"}}, locked) == "the server is locked"
    assert refused({"reboot": {"type": "SOFT"}}, locked, is_admin=True) is None
    assert refused({"reboot": {"type": "SOFT"}}, locked, is_admin=None) is None
    assert refused({"evacuate": {}}, locked) is None  # evacuate ignores locks


def test_delete_checks_no_state_but_the_lock():
    delete = Operation(SERVER_ID, "delete", "delete")
    busy = server("building", task="spawning", **{"OS-SRV-USG:launched_at": None})
    assert precheck.state_refusal(delete, busy, False) is None
    assert precheck.state_refusal(delete, server(locked=True), False) == "the server is locked"


def test_a_server_never_launched_is_refused_where_nova_requires_it():
    srv = server(**{"OS-SRV-USG:launched_at": None})
    assert refused({"reboot": {"type": "HARD"}}, srv) == "the server has never been launched"
    assert refused({"forceDelete": None}, srv) is None


def test_without_the_extended_states_the_status_stands_for_them():
    def bare(status):
        return {"id": SERVER_ID, "status": status, "tenant_id": "demo", "user_id": "alice"}

    assert "vm_state" in refused({"pause": None}, bare("SHUTOFF"))
    assert refused({"os-stop": None}, bare("ACTIVE")) is None
    # ACTIVE may hide a task (powering-off...): only what the status implies decides.
    assert refused({"pause": None}, bare("ACTIVE")) is None
    assert "task_state" in refused({"reboot": {"type": "SOFT"}}, bare("REBOOT"))
    assert refused({"reboot": {"type": "HARD"}}, bare("REBOOT")) is None
    assert refused({"os-stop": None}, bare("SOMETHING_NEW")) is None
    migrating = Operation(SERVER_ID, "force_complete", "live-migrate-complete")
    assert precheck.state_refusal(migrating, bare("MIGRATING"), False) is None
    assert precheck.state_refusal(migrating, bare("ACTIVE"), False) is None
    assert "task_state" in precheck.state_refusal(migrating, bare("RESIZE"), False)


def test_every_classified_action_has_a_rule():
    from novaproxy.api.classify import SERVER_ACTIONS

    assert set(SERVER_ACTIONS) | {"delete", "force_complete", "migration-abort"} \
        == set(nova_rules.RULES)


def test_an_action_before_its_microversion_is_refused():
    check = precheck.Precheck(None, None)
    body = {"trigger_crash_dump": None}
    refusal = check.refusal(op(body), server(), request(body))
    assert refusal == precheck.Refusal(
        "microversion", "trigger_crash_dump needs microversion 2.17 or later, not 2.1")
    assert check.refusal(op(body), server(), request(body, "2.17")) is None
    assert check.refusal(op(body), server(), request(body, "latest")) is None


def test_the_legacy_v2_api_serves_every_action_of_2_1():
    check = precheck.Precheck(None, None)
    body = {"reboot": {"type": "SOFT"}}
    legacy = request(body, path=f"/v2/servers/{SERVER_ID}/action")
    assert check.refusal(op(body), server(), legacy) is None
    crash = {"trigger_crash_dump": None}
    assert check.refusal(op(crash), server(), request(crash, path=f"/v2/servers/{SERVER_ID}/action")
                         ).check == "microversion"


def test_without_an_identity_only_the_state_is_checked_and_that_is_said_once(caplog):
    check = precheck.Precheck(None, None)
    body = {"migrate": None}
    with caplog.at_level(logging.WARNING, logger=precheck.__name__):
        assert check.refusal(op(body), server(), request(body)) is None
        refusal = check.refusal(op(body), server("suspended"), request(body))
    assert refusal.check == "state" and "vm_state" in str(refusal)
    said = [r for r in caplog.records if "no validated identity" in r.getMessage()]
    assert len(said) == 1


def test_an_unreadable_microversion_is_left_to_nova():
    check = precheck.Precheck(None, None)
    body = {"pause": None}
    assert check.refusal(op(body), server("stopped"), request(body, "2.x")) is None


@pytest.mark.parametrize("conf, message", [
    ({"nova_policy_enforce_new_defaults": "maybe"}, "must be true or false"),
    ({"nova_policy_file": "/nonexistent/policy.yaml"}, "no such file"),
])
def test_bad_options_say_what_to_fix(conf, message):
    with pytest.raises(precheck.PrecheckError, match=message):
        precheck.from_conf(conf)
