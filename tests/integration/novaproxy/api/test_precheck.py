"""The precheck with the real oslo.policy enforcer, Nova's real default rules and
schemas, behind the real keystonemiddleware auth_token; and nova_rules against
Nova's own code (a Nova upgrade that changes a fact fails here)."""

import functools
import importlib
import inspect
import json
import os

import pytest
import webob
import webtest

from novaproxy.api import callers, nova_rules, nova_schemas, precheck
from novaproxy.api._request import NegotiationRequest

SERVER_ID = "2054cb7a-6a4e-4b5e-8f8c-0d3c4f1f6d2a"
TOKENS = {  # token -> (user, project, roles), as Keystone would validate them
    "member:demo": ("member", "demo", ["member", "reader"]),
    "manager:demo": ("manager", "demo", ["manager", "member", "reader"]),
    "admin:demo": ("admin", "admin-project", ["admin", "member", "reader"]),
    "member:other": ("stranger", "other", ["member", "reader"]),
}


def server(owner="member", project="demo", **extra):
    return {"id": SERVER_ID, "status": "ACTIVE", "tenant_id": project, "user_id": owner,
            "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:task_state": None, "locked": False,
            "OS-SRV-USG:launched_at": "2026-11-30T05:00:00.000000", **extra}


@pytest.fixture(scope="module")
def tokens():
    from keystoneauth1 import fixture as ks_fixture
    from keystonemiddleware.fixture import AuthTokenFixture

    fixture = AuthTokenFixture()
    fixture.setUp()
    for token, (user, project, roles) in TOKENS.items():
        fixture.add_token_data(token_id=token, user_id=user, project_id=project,
                               role_list=roles)
    system = ks_fixture.V3Token(user_id="cloud-admin")
    system.set_system_scope()
    system.add_role(name="admin")
    fixture.add_token(system, token_id="system:admin")
    yield fixture
    fixture.cleanUp()


def behind_auth_token(check: precheck.Precheck, srv: dict):
    """auth_token → an app that answers the precheck's verdict on the request, as JSON."""
    from keystonemiddleware import auth_token

    @webob.dec.wsgify(RequestClass=NegotiationRequest)
    def app(req):
        refusal = check.refusal(req.operation(), srv, req)
        return webob.Response(json_body=None if refusal is None else
                              {"check": refusal.check, "reason": refusal.reason})

    return webtest.TestApp(auth_token.filter_factory(
        {}, www_authenticate_uri="http://keystone.invalid", delay_auth_decision="false")(app))


@pytest.fixture(scope="module")
def defaults():
    return precheck.from_conf({})


def verdict(check, token, body, srv=None, version="2.96"):
    app = behind_auth_token(check, srv or server())
    resp = app.post(f"/v2.1/servers/{SERVER_ID}/action", json.dumps(body), headers={
        "X-Auth-Token": token, "Content-Type": "application/json",
        "OpenStack-API-Version": f"compute {version}"})
    return resp.json


def test_a_members_cold_migration_is_refused_by_novas_default_rules(tokens, defaults):
    assert verdict(defaults, "member:demo", {"migrate": None}) == {
        "check": "policy", "reason": "os_compute_api:os-migrate-server:migrate does not allow it"}
    live = {"os-migrateLive": {"host": None, "block_migration": "auto"}}
    assert verdict(defaults, "member:demo", live)["check"] == "policy"


def test_an_admins_migration_passes(tokens, defaults):
    assert verdict(defaults, "admin:demo", {"migrate": None}) is None
    assert verdict(defaults, "admin:demo", {"migrate": {"host": "compute2"}}) is None


def test_a_project_manager_may_migrate_but_not_to_a_host(tokens, defaults):
    assert verdict(defaults, "manager:demo", {"migrate": None}) is None
    refusal = verdict(defaults, "manager:demo", {"migrate": {"host": "compute2"}})
    assert refusal["reason"] == "os_compute_api:os-migrate-server:migrate:host does not allow it"


def test_a_member_reboots_its_own_projects_server_but_not_anothers(tokens, defaults):
    assert verdict(defaults, "member:demo", {"reboot": {"type": "SOFT"}}) is None
    assert verdict(defaults, "member:other", {"reboot": {"type": "SOFT"}})["check"] == "policy"


def test_a_system_scoped_token_is_out_of_scope_for_project_rules(tokens, defaults):
    # Nova's rules are scope_types=['project']: oslo.policy refuses other scopes.
    assert verdict(defaults, "system:admin", {"migrate": None})["check"] == "policy"


def test_is_admin_comes_from_novas_context_is_admin_rule(tokens, defaults):
    locked = server(locked=True)
    body = {"reboot": {"type": "SOFT"}}
    assert verdict(defaults, "member:demo", body, locked) == {
        "check": "state", "reason": "the server is locked"}
    assert verdict(defaults, "admin:demo", body, locked) is None


def test_the_body_is_checked_with_novas_own_schema_for_the_microversion(tokens, defaults):
    refusal = verdict(defaults, "admin:demo", {"reboot": {"type": "GENTLE"}})
    assert refusal["check"] == "schema" and "GENTLE" in refusal["reason"]
    # migrate's body has a schema only from 2.56 on.
    assert verdict(defaults, "admin:demo", {"migrate": {"host": 3}}, version="2.55") is None
    assert verdict(defaults, "admin:demo", {"migrate": {"host": 3}}, version="2.56")[
        "check"] == "schema"
    # 2.25 dropped disk_over_commit; "latest" is Nova's newest.
    live = {"os-migrateLive": {"host": None, "block_migration": False,
                               "disk_over_commit": False}}
    assert verdict(defaults, "admin:demo", live, version="2.24") is None
    assert verdict(defaults, "admin:demo", live, version="latest")["check"] == "schema"


def test_the_operators_policy_file_overrides_the_defaults(tokens, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text('"os_compute_api:servers:reboot": "role:admin"\n')
    check = precheck.from_conf({"nova_policy_file": str(path)})
    body = {"reboot": {"type": "SOFT"}}
    assert verdict(check, "member:demo", body) == {
        "check": "policy", "reason": "os_compute_api:servers:reboot does not allow it"}
    assert verdict(check, "admin:demo", body) is None
    assert verdict(check, "member:demo", {"os-stop": None}) is None  # defaults still apply


def rewrite(path, text):
    """Replace the file's rules, with an mtime oslo.policy sees as newer."""
    mtime = path.stat().st_mtime + 10
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_a_policy_file_changed_while_running_is_read_again_as_nova_does(tokens, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text('"os_compute_api:servers:reboot": "role:admin"\n')
    check = precheck.from_conf({"nova_policy_file": str(path)})
    body = {"reboot": {"type": "SOFT"}}
    assert verdict(check, "member:demo", body)["check"] == "policy"
    rewrite(path, '"os_compute_api:servers:reboot": "role:member"\n')
    assert verdict(check, "member:demo", body) is None
    rewrite(path, '"os_compute_api:servers:reboot": "role:admin"\n')
    assert verdict(check, "member:demo", body)["check"] == "policy"
    # Broken while running: the check that meets it gives no verdict, and no 500.
    # (oslo.policy, in Nova as here, then keeps the rules it had.)
    rewrite(path, '"os_compute_api:servers:reboot": [unclosed\n')
    assert verdict(check, "member:demo", body) is None


def test_a_malformed_policy_file_stops_the_start(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text('"os_compute_api:servers:reboot": [unclosed\n')
    with pytest.raises(precheck.PrecheckError, match="nova_policy_file"):
        precheck.from_conf({"nova_policy_file": str(path)})


def generated_policy(tmp_path, drop=()):
    """Nova's effective rules as the operator's tool writes them, less ``drop``."""
    import subprocess
    import sys

    tool = os.path.join(os.path.dirname(sys.executable), "oslopolicy-policy-generator")
    rules = subprocess.run([tool, "--namespace", "nova"], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    path = tmp_path / "nova-policy.yaml"
    path.write_text("\n".join(line for line in rules
                              if not any(line.startswith(f'"{name}"') for name in drop)))
    return str(path)


def test_without_nova_a_full_generated_file_decides_as_novas_defaults(tokens, tmp_path):
    check = precheck.Precheck(callers.NovaPolicy(generated_policy(tmp_path)), None)
    assert verdict(check, "member:demo", {"migrate": None})["check"] == "policy"
    assert verdict(check, "admin:demo", {"migrate": None}) is None
    assert verdict(check, "member:demo", {"reboot": {"type": "SOFT"}}) is None
    assert verdict(check, "member:demo", {"reboot": {"type": "SOFT"}},
                   server(locked=True))["reason"] == "the server is locked"


def test_without_nova_a_rule_resting_on_a_missing_one_decides_nothing(tokens, tmp_path):
    # oslo.policy denies a reference to an undefined rule; Nova, which has it, may not.
    path = generated_policy(tmp_path, drop=("project_manager_or_admin", "context_is_admin"))
    check = precheck.Precheck(callers.NovaPolicy(path), None)
    assert verdict(check, "member:demo", {"migrate": None}) is None
    # Nor is a lock known to bind the caller without context_is_admin.
    assert verdict(check, "member:demo", {"reboot": {"type": "SOFT"}},
                   server(locked=True)) is None
    assert verdict(check, "member:other", {"reboot": {"type": "SOFT"}}) is None


WITHOUT_NOVA = """
import importlib.util, json, sys
sys.modules["nova"] = None  # as in a proxy installed without nova
spec = importlib.util.spec_from_file_location("t", sys.argv[1])
t = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t)
from keystonemiddleware.fixture import AuthTokenFixture
tokens = AuthTokenFixture()
tokens.setUp()
for token, (user, project, roles) in t.TOKENS.items():
    tokens.add_token_data(token_id=token, user_id=user, project_id=project, role_list=roles)
check = t.precheck.from_conf({"nova_policy_file": sys.argv[2]})
print(json.dumps([check.schemas is None,
                  t.verdict(check, "member:demo", {"migrate": None}),
                  t.verdict(check, "admin:demo", {"migrate": None}),
                  t.verdict(check, "member:demo", {"reboot": {"type": "SOFT"}}),
                  t.verdict(check, "admin:demo", {"reboot": {"type": "SOFT"}})]))
"""


def test_a_proxy_without_nova_checks_the_operators_file(tmp_path):
    import subprocess
    import sys

    path = generated_policy(tmp_path)
    # Nova's is_admin check (nova.policy registers it) reads "true" in any case;
    # oslo.policy's generic check would deny an admin here, whom Nova lets through.
    with open(path, "a") as f:
        f.write('\n"os_compute_api:servers:reboot": "is_admin:true"\n')
    out = subprocess.run([sys.executable, "-c", WITHOUT_NOVA, __file__, path], check=True,
                         capture_output=True, text=True).stdout
    no_schemas, member, admin, reboot, admin_reboot = json.loads(out.splitlines()[-1])
    assert no_schemas and member["check"] == "policy" and admin is None
    assert reboot == {"check": "policy", "reason": "os_compute_api:servers:reboot does not "
                                                   "allow it"}
    assert admin_reboot is None


# -- nova_rules against Nova's code -------------------------------------------------------

@functools.cache
def registered_rules():
    import nova.policies

    return {rule.name for rule in nova.policies.list_rules()}


def test_every_rule_named_is_one_nova_registers():
    for rule in nova_rules.RULES.values():
        for name in (rule.rule, rule.host_rule, rule.extra_host_rule):
            assert name is None or name in registered_rules(), name
    assert nova_rules.CONTEXT_IS_ADMIN in registered_rules()


def controller_methods():
    """action -> the controller method Nova dispatches it to."""
    methods = {}
    for module, name in nova_schemas.CONTROLLERS:
        controller = getattr(importlib.import_module(f"nova.api.openstack.compute.{module}"),
                             name)
        for action, method in controller.wsgi_actions.items():
            methods[action] = getattr(controller, method)
    return methods


def checked_rules(method) -> set:
    """The policy names a controller method's source passes to context.can."""
    import re

    source = inspect.getsource(method)
    names = set()
    for prefix, suffix in re.findall(r"\.can\(\s*(\w+(?:\.\w+)?)(?:\s*%\s*'([^']+)')?", source):
        module_name, _, constant = prefix.rpartition(".")
        module = importlib.import_module(method.__module__)
        value = getattr(getattr(module, module_name), constant) if module_name else \
            getattr(module, constant)
        names.add(value % suffix if suffix else value)
    return names


# Checked only for some bodies (trusted image certificates), never claimed as a refusal.
UNCLAIMED = {"rebuild": {"os_compute_api:servers:rebuild:trusted_certs"}}


def test_each_controller_checks_the_rules_tabulated_for_its_action():
    methods = controller_methods()
    for action, rule in nova_rules.RULES.items():
        if action in ("delete", "migration-abort"):
            continue  # DELETE routes, not actions: below
        expected = {rule.rule} | ({rule.host_rule} if rule.host_rule else set())
        assert checked_rules(methods[action]) == expected | UNCLAIMED.get(action, set()), action


def test_the_delete_routes_check_their_rules():
    from nova.api.openstack.compute import server_migrations, servers

    assert checked_rules(servers.ServersController._delete) == {
        nova_rules.RULES["delete"].rule}
    assert checked_rules(server_migrations.ServerMigrationsController.delete) == {
        nova_rules.RULES["migration-abort"].rule}


def test_each_actions_microversion_is_the_one_its_controller_requires():
    methods = controller_methods()
    for action, rule in nova_rules.RULES.items():
        method = methods.get(action)
        if method is None:
            continue
        since = getattr(method, "min_version", None)
        assert rule.since == (tuple(map(int, since.split("."))) if since else None), action
    from nova.api.openstack.compute import server_migrations

    assert nova_rules.RULES["migration-abort"].since == (2, 24)
    assert server_migrations.ServerMigrationsController.delete.min_version == "2.24"


def compute_api_checks(method) -> nova_rules.States:
    """The check_instance_state and check_instance_lock decorators on a compute API method."""
    found = {"lock": False, "vm": None, "task": None, "launched": False}  # no state check
    while method is not None:
        code = method.__code__.co_qualname
        if code.startswith("check_instance_lock."):
            found["lock"] = True
        closure = inspect.getclosurevars(method).nonlocals
        if code.startswith("check_instance_state.") and "must_have_launched" in closure:
            found.update(vm=closure["vm_state"], task=closure["task_state"],
                         launched=closure["must_have_launched"])
        method = getattr(method, "__wrapped__", None)
    return nova_rules.States(frozenset(found["vm"]) if found["vm"] is not None else None,
                             frozenset(found["task"]) if found["task"] is not None else None,
                             found["launched"], found["lock"])


# The compute API method each action reaches (what its controller calls).
COMPUTE_API = {
    "os-stop": "stop", "os-start": "start", "pause": "pause", "unpause": "unpause",
    "suspend": "suspend", "resume": "resume", "resize": "resize",
    "confirmResize": "confirm_resize", "revertResize": "revert_resize", "migrate": "resize",
    "os-migrateLive": "live_migrate", "shelve": "shelve", "shelveOffload": "shelve_offload",
    "unshelve": "unshelve", "rebuild": "rebuild", "evacuate": "evacuate",
    "forceDelete": "force_delete", "restore": "restore",
    "trigger_crash_dump": "trigger_crash_dump", "rescue": "rescue", "unrescue": "unrescue",
    "delete": "delete", "force_complete": "live_migrate_force_complete",
    "migration-abort": "live_migrate_abort",
}


def test_each_actions_states_are_the_compute_apis_own():
    from nova.compute import api

    assert set(COMPUTE_API) | {"reboot"} == set(nova_rules.RULES)
    for action, name in COMPUTE_API.items():
        assert compute_api_checks(getattr(api.API, name)) == nova_rules.RULES[action].states, \
            action
    reboot_lock = compute_api_checks(api.API.reboot).lock
    for kind, name in (("SOFT", "_soft_reboot"), ("HARD", "_hard_reboot")):
        states = compute_api_checks(getattr(api.API, name))
        assert nova_rules.States(states.vm, states.task, states.launched, reboot_lock) \
            == nova_rules.STATES_BY_TYPE[("reboot", kind)], kind


def test_the_status_table_is_novas_state_map_read_backwards():
    from nova.api.openstack import common

    implied: dict = {}
    for vm, tasks in common._STATE_MAP.items():
        for task, status in tasks.items():
            vms, task_states = implied.setdefault(status, (set(), set()))
            vms.add(vm)
            task_states.add("default" if task == "default" else task)
    expected = {status: (frozenset(vms), None if "default" in tasks else frozenset(tasks))
                for status, (vms, tasks) in implied.items()}
    assert nova_rules.STATUS == expected
