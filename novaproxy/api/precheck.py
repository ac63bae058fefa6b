"""Would Nova refuse this lifecycle request before acting on it, and why?

The guest is asked, and prepares irrevocably, before Nova sees the request;
a request Nova is sure to refuse should therefore never reach the guest. This
module answers, for a classified operation on a server (as the caller's own
look-up returned it, microversion 2.47), from what can be known without acting:

- **microversion**: the action exists at the requested microversion;
- **schema**: the body against the action's JSON schema for that microversion,
  with Nova's own schemas and validator (where nova is importable);
- **policy**: the caller's authorisation for that very action under Nova's
  policy rules (:mod:`novaproxy.api.nova_rules`): Nova's own enforcer through
  ``nova.context`` inside nova-api's pipeline; standalone, the same rules
  through oslo.policy (Nova's registered defaults and the operator's Nova
  policy file) with the identity keystonemiddleware's auth_token validated;
- **state**: Nova's allowed vm/task states per action and the server's lock.

A refusal is claimed only when Nova is certain to refuse: anything unknown
(no identity, no nova, an unreadable microversion, a status without states)
is no refusal, because a refused request goes to Nova un-negotiated. Quota and
scheduling cannot be known in advance and stay covered by the abort notice.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from types import SimpleNamespace

from novaproxy.api import nova_rules
from novaproxy.api.classify import Operation

LOG = logging.getLogger(__name__)

POLICY_FILE_KEY = "nova_policy_file"
NEW_DEFAULTS_KEY = "nova_policy_enforce_new_defaults"
# "latest": above every microversion a rule can name.
LATEST = (2, 1 << 30)
LEGACY_V2 = (2, 0)
_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")
_LEGACY_PATH = re.compile(r"^/v2(?:/|$)")
_LEGACY_ENVIRON = "openstack.legacy_v2"  # nova.api.openstack.wsgi.ENV_LEGACY_V2


class PrecheckError(ValueError):
    """A bad paste.ini option, found at start-up."""


@dataclass(frozen=True)
class Refusal:
    """Nova would refuse the request: which check says so, and why."""

    check: str  # "microversion", "schema", "policy" or "state"
    reason: str

    def __str__(self) -> str:
        return f"{self.check}: {self.reason}"


# -- microversion ---------------------------------------------------------------

def requested_version(headers, path: str, environ: dict) -> tuple | None:
    """The microversion Nova will serve the request at, or None if it cannot be read.

    As nova.api.openstack.wsgi does: ``OpenStack-API-Version: compute X.Y``
    first, then ``X-OpenStack-Nova-API-Version``, else 2.1; the legacy /v2
    API ignores both and is 2.0.
    """
    if environ.get(_LEGACY_ENVIRON) or _LEGACY_PATH.match(path):
        return LEGACY_V2
    value = None
    for part in reversed((headers.get("OpenStack-API-Version") or "").split(",")):
        words = part.strip().split(None, 1)  # as microversion_parse reads it: last one wins
        if len(words) == 2 and words[0].lower() == "compute":
            value = words[1].strip()
            break
    if not value:
        legacy = headers.get("X-OpenStack-Nova-API-Version")
        value = legacy.split(",")[-1].strip() if legacy is not None else None
    if value is None:
        return (2, 1)
    if value == "latest":
        return LATEST
    match = _VERSION.match(value)
    return (int(match[1]), int(match[2])) if match else None


def _text(version: tuple) -> str:
    return "latest" if version == LATEST else f"{version[0]}.{version[1]}"


# -- what is checked ----------------------------------------------------------------

def rules_to_check(rule: nova_rules.Rule, op: Operation, version: tuple,
                   server: dict) -> list | None:
    """``[(policy name, target)]`` Nova checks for this request, or None without a target."""
    owner, project = server.get("user_id"), server.get("tenant_id")
    if not project or not owner:
        return None

    def target(kind: str) -> dict:
        if kind == nova_rules.PROJECT:
            return {"project_id": project}
        return {"user_id": owner, "project_id": project}

    host = bool(op.details.get("host")) and version >= rule.host_since
    name = rule.host_rule if host and rule.host_rule else rule.rule
    checks = [(name, target(rule.target))]
    if host and rule.extra_host_rule:
        checks.append((rule.extra_host_rule, target(nova_rules.OWNER)))
    return checks


def _server_states(server: dict) -> tuple:
    """(possible vm_states, possible task_states); None where unknown."""
    if "OS-EXT-STS:vm_state" in server:
        vm = frozenset({server["OS-EXT-STS:vm_state"]})
        if "OS-EXT-STS:task_state" in server:
            return vm, frozenset({server["OS-EXT-STS:task_state"]})
        return vm, None
    return nova_rules.STATUS.get(str(server.get("status", "")).upper(), (None, None))


def state_refusal(op: Operation, server: dict, is_admin: bool | None) -> str | None:
    """Why Nova's compute API would refuse ``op`` on ``server`` as it stands, or None.

    ``is_admin``: the caller's context is admin (a lock binds only others);
    None when unknown, and then a lock decides nothing.
    """
    rule = nova_rules.RULES.get(op.action)
    if rule is None:
        return None
    states = rule.states or nova_rules.STATES_BY_TYPE.get((op.action, op.details.get("type")))
    if states is None:
        return None
    if states.lock and server.get("locked") is True and is_admin is False:
        return "the server is locked"
    vm, task = _server_states(server)
    if states.vm is not nova_rules.ANY and vm is not None and not vm & states.vm:
        return (f"{op.action} needs vm_state {' or '.join(sorted(states.vm))}; "
                f"the server is {'/'.join(sorted(map(str, vm)))}")
    if states.task is not nova_rules.ANY and task is not None and not task & states.task:
        return (f"{op.action} cannot start while task_state is "
                f"{'/'.join(sorted(map(str, task)))}")
    if states.launched and "OS-SRV-USG:launched_at" in server \
            and not server["OS-SRV-USG:launched_at"]:
        return "the server has never been launched"
    return None


# -- who asks ------------------------------------------------------------------------

class _NovaContext:
    """Inside nova-api's pipeline: Nova's own enforcer, through its request context."""

    def __init__(self, context) -> None:
        self.context = context
        self.is_admin = bool(getattr(context, "is_admin", False))

    def allowed(self, rule: str, target: dict) -> bool | None:
        try:
            return bool(self.context.can(rule, target, fatal=False))
        except Exception as exc:  # e.g. a rule this Nova does not register
            LOG.warning("policy %s could not be checked through Nova's context: %s", rule, exc)
            return None


class NovaPolicy:
    """Nova's policy rules in a standalone proxy, through oslo.policy.

    ``defaults``: Nova's registered rules (``nova.policies.list_rules()``), under
    the operator's file. None where nova is not importable: then the file is all
    there is (``oslopolicy-policy-generator --namespace nova`` writes every rule),
    and a rule decides only if it and every rule it refers to are in it.
    """

    def __init__(self, policy_file: str | None, enforce_new_defaults: bool = True,
                 defaults: list | None = None) -> None:
        from oslo_config import cfg
        from oslo_policy import policy

        _register_is_admin(policy)
        conf = cfg.ConfigOpts()
        conf([], project="novaproxy", default_config_files=[], default_config_dirs=[])
        # oslo.policy merges the registered defaults only while reading a file:
        # without the operator's, an empty one. No policy.d: one file, named.
        self.enforcer = policy.Enforcer(conf, policy_file=policy_file or os.devnull)
        conf.set_override("enforce_new_defaults", enforce_new_defaults, "oslo_policy")
        conf.set_override("policy_dirs", [], "oslo_policy")
        self.enforcer.suppress_default_change_warnings = True
        self.enforcer.suppress_deprecation_warnings = True
        self.complete = defaults is not None
        if defaults is not None:
            self.enforcer.register_defaults(defaults)
        self.enforcer.load_rules()  # a malformed file raises here, at start-up

    def decides(self, rule: str) -> bool:
        """Whether every rule ``rule`` rests on is known (else oslo.policy would deny)."""
        if self.complete:
            return True
        seen: set = set()
        pending = [rule]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            check = self.enforcer.rules.get(name)
            if check is None:
                return False
            nodes = [check]
            while nodes:
                node = nodes.pop()
                if getattr(node, "kind", None) == "rule":
                    pending.append(node.match)
                nodes.extend(getattr(node, "rules", None) or ())
                if getattr(node, "rule", None) is not None:
                    nodes.append(node.rule)
        return True

    def caller(self, token) -> _Credentials:
        """The credentials Nova's keystonecontext would build from this validated token."""
        user = token.user
        system = "all" if user.system_scoped and (user.system or {}).get("all") else None
        creds = {
            "user_id": user.user_id, "user_domain_id": user.user_domain_id,
            "system_scope": system, "domain_id": user.domain_id,
            "project_id": user.project_id, "project_domain_id": user.project_domain_id,
            "roles": list(user.role_names or ()), "is_admin_project": user.is_admin_project,
            "service_user_id": None, "service_user_domain_id": None,
            "service_project_id": None, "service_project_domain_id": None,
            "service_roles": [],
        }
        service = token.service if getattr(token, "has_service_token", False) else None
        if service is not None:
            creds.update(service_user_id=service.user_id,
                         service_user_domain_id=service.user_domain_id,
                         service_project_id=service.project_id,
                         service_project_domain_id=service.project_domain_id,
                         service_roles=list(service.role_names or ()))
        # RequestContext: is_admin is the context_is_admin rule on the caller itself.
        own = {"project_id": creds["project_id"], "user_id": creds["user_id"]}
        known = self.decides(nova_rules.CONTEXT_IS_ADMIN)
        creds["is_admin"] = bool(self.enforcer.enforce(nova_rules.CONTEXT_IS_ADMIN, own,
                                                       {**creds, "is_admin": False}))
        return _Credentials(self, creds, creds["is_admin"] if known else None)


class _Credentials:
    def __init__(self, policy: NovaPolicy, creds: dict, is_admin: bool | None) -> None:
        self.policy = policy
        self.creds = creds
        self.is_admin = is_admin  # None: context_is_admin is not known here

    def allowed(self, rule: str, target: dict) -> bool | None:
        try:
            if not self.policy.decides(rule):
                return None
            return bool(self.policy.enforcer.enforce(rule, target, dict(self.creds)))
        except ValueError as exc:  # the file, read again when it changes, no longer parses
            LOG.warning("policy %s could not be checked: %s", rule, exc)
            return None


def _register_is_admin(policy) -> None:
    """Nova's ``is_admin:True`` check (nova.policy.IsAdminCheck), where nova is absent."""
    try:
        import nova.policy  # noqa: F401  (registers Nova's own)
        return
    except ImportError:
        pass

    @policy.register("is_admin")
    class IsAdmin(policy.Check):
        def __init__(self, kind: str, match: str) -> None:
            self.expected = match.lower() == "true"
            super().__init__(kind, str(self.expected))

        def __call__(self, target, creds, enforcer, current_rule=None) -> bool:
            return creds["is_admin"] == self.expected


# -- the body ------------------------------------------------------------------------

# Nova's controllers of /servers/{id}/action and /servers/{id}/migrations/{id}/action.
CONTROLLERS = (("servers", "ServersController"), ("migrate_server", "MigrateServerController"),
               ("pause_server", "PauseServerController"),
               ("suspend_server", "SuspendServerController"), ("shelve", "ShelveController"),
               ("evacuate", "EvacuateController"), ("deferred_delete", "DeferredDeleteController"),
               ("rescue", "RescueController"),
               ("server_migrations", "ServerMigrationsController"))


class NovaSchemas:
    """The request-body schemas Nova's controllers carry, by action, and Nova's validator."""

    def __init__(self) -> None:
        from nova import exception
        from nova.api.openstack import api_version_request
        from nova.api.validation import validators

        self._versions = api_version_request
        self._validator = validators._SchemaValidator  # what @validation.schema runs
        self._invalid = exception.ValidationError
        self._compiled: dict = {}  # id(schema) -> validator: building one costs ~3 ms
        self.by_action = {}
        for module, name in CONTROLLERS:
            controller = getattr(importlib.import_module(f"nova.api.openstack.compute.{module}"),
                                 name)
            for action, method in controller.wsgi_actions.items():
                if action in nova_rules.RULES:
                    self.by_action[action] = getattr(controller, method).request_body_schemas

    def refusal(self, action: str, body, version: tuple) -> str | None:
        schemas = self.by_action.get(action)
        if schemas is None or version == LEGACY_V2:  # v2.0's relaxed rules: not second-guessed
            return None
        newest = self._versions.max_api_version()
        if version == LATEST:
            requested = newest
        else:
            requested = self._versions.APIVersionRequest(_text(version))
            if requested > newest:  # a newer Nova than ours: its schema is unknown here
                return None
        schema = schemas(SimpleNamespace(api_version_request=requested))
        if schema is None:
            return None
        validator = self._compiled.get(id(schema))
        if validator is None:  # Nova's schemas are module constants: ids stay theirs
            validator = self._compiled[id(schema)] = self._validator(schema, False, True)
        try:
            validator.validate(body)
        except self._invalid as exc:
            return exc.format_message()
        except Exception as exc:  # a validator problem is no verdict on the request
            LOG.warning("%s body could not be validated: %s", action, exc)
        return None


# -- the decision --------------------------------------------------------------------

class Precheck:
    def __init__(self, policy: NovaPolicy | None, schemas: NovaSchemas | None) -> None:
        self.policy = policy
        self.schemas = schemas
        self._said_unauthenticated = threading.Event()

    def refusal(self, op: Operation, server: dict, req) -> Refusal | None:
        """Why Nova would refuse ``req`` (classified as ``op``) on ``server``, or None."""
        rule = nova_rules.RULES.get(op.action)
        if rule is None:
            return None
        version = requested_version(req.headers, req.script_name + req.path_info, req.environ)
        if version is None:  # Nova answers an unreadable microversion itself
            return None
        if rule.since is not None and version < rule.since:
            return Refusal("microversion", f"{op.action} needs microversion "
                                           f"{_text(rule.since)} or later, not {_text(version)}")
        body = _body(req) if self.schemas is not None and req.method == "POST" else None
        if body is not None:
            why = self.schemas.refusal(op.action, body, version)
            if why is not None:
                return Refusal("schema", why)
        caller = self._caller(req.environ)
        checks = rules_to_check(rule, op, version, server) if caller is not None else None
        for name, target in checks or ():
            if caller.allowed(name, target) is False:
                return Refusal("policy", f"{name} does not allow it")
        why = state_refusal(op, server, caller.is_admin if caller is not None else None)
        return Refusal("state", why) if why is not None else None

    def _caller(self, environ: dict):
        context = environ.get("nova.context")
        if context is not None:
            return _NovaContext(context)
        token = environ.get("keystone.token_auth")
        if token is not None and getattr(token, "has_user_token", False):
            if self.policy is None:
                return None
            try:
                return self.policy.caller(token)
            except ValueError as exc:  # as in allowed(): no verdict, never a 500
                LOG.warning("the caller's policy credentials could not be built: %s", exc)
                return None
        if not self._said_unauthenticated.is_set():
            self._said_unauthenticated.set()
            LOG.warning("no validated identity in front of the negotiation filter (neither "
                        "Nova's context nor keystonemiddleware's auth_token): callers' "
                        "authorisation is not checked before the guest is asked")
        return None


def _body(req):
    try:
        return json.loads(req.body)
    except ValueError:
        return None


def from_conf(conf: dict) -> Precheck:
    """The precheck for the filter's options; a bad option raises :class:`PrecheckError`."""
    policy_file = str(conf.get(POLICY_FILE_KEY, "") or "").strip() or None
    raw = str(conf.get(NEW_DEFAULTS_KEY, "true")).strip().lower()
    if raw not in ("true", "false"):
        raise PrecheckError(f"{NEW_DEFAULTS_KEY} = {raw!r}: must be true or false")
    if policy_file is not None and not os.path.isfile(policy_file):
        raise PrecheckError(f"{POLICY_FILE_KEY} = {policy_file!r}: no such file")
    try:
        import nova.policies
    except ImportError:
        return _without_nova(policy_file, raw == "true")
    try:
        policy = NovaPolicy(policy_file, raw == "true", nova.policies.list_rules())
    except Exception as exc:
        raise PrecheckError(f"{POLICY_FILE_KEY} = {policy_file!r}: {exc}") from None
    return Precheck(policy, NovaSchemas())


def _without_nova(policy_file: str | None, enforce_new_defaults: bool) -> Precheck:
    """Nova's defaults and schemas are unknown: the operator's file decides what it can."""
    if policy_file is None:
        LOG.warning("nova is not importable here and %s is not set: callers' authorisation "
                    "(standalone) and request bodies are not checked before the guest is "
                    "asked; only the server's state is", POLICY_FILE_KEY)
        return Precheck(None, None)
    try:
        policy = NovaPolicy(policy_file, enforce_new_defaults)
    except ImportError:
        raise PrecheckError(f"{POLICY_FILE_KEY}: needs oslo.policy") from None
    except Exception as exc:
        raise PrecheckError(f"{POLICY_FILE_KEY} = {policy_file!r}: {exc}") from None
    LOG.warning("nova is not importable here: callers' authorisation is checked only against "
                "rules %s defines in full, and request bodies are not checked", policy_file)
    return Precheck(policy, None)
