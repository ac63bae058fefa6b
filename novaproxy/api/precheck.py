"""Would Nova refuse this lifecycle request before acting on it, and why?

The guest is asked, and prepares irrevocably, before Nova sees the request;
a request Nova is sure to refuse should therefore never reach the guest. This
module answers, for a classified operation on a server (as the caller's own
look-up returned it, microversion 2.47), from what can be known without acting:

- **microversion**: the action exists at the requested microversion
  (:mod:`novaproxy.api.microversion`);
- **schema**: the body against the action's JSON schema for that microversion,
  with Nova's own schemas and validator where nova is importable
  (:mod:`novaproxy.api.nova_schemas`);
- **policy**: the caller's authorisation for that very action under Nova's
  policy rules (:mod:`novaproxy.api.nova_rules`, :mod:`novaproxy.api.callers`):
  Nova's own enforcer through ``nova.context`` inside nova-api's pipeline;
  standalone, the same rules through oslo.policy (Nova's registered defaults
  and the operator's Nova policy file) with the identity keystonemiddleware's
  auth_token validated;
- **state**: Nova's allowed vm/task states per action and the server's lock.

A refusal is claimed only when Nova is certain to refuse: anything unknown
(no identity, no nova, an unreadable microversion, a status without states)
is no refusal, because a refused request goes to Nova un-negotiated. Quota and
scheduling cannot be known in advance and stay covered by the abort notice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass

from novaproxy.api import nova_rules
from novaproxy.api.callers import NovaContext, NovaPolicy
from novaproxy.api.classify import Operation
from novaproxy.api.microversion import requested_version, text
from novaproxy.api.nova_schemas import NovaSchemas

LOG = logging.getLogger(__name__)

POLICY_FILE_KEY = "nova_policy_file"
NEW_DEFAULTS_KEY = "nova_policy_enforce_new_defaults"


class PrecheckError(ValueError):
    """A bad paste.ini option, found at start-up."""


@dataclass(frozen=True)
class Refusal:
    """Nova would refuse the request: which check says so, and why."""

    check: str  # "microversion", "schema", "policy" or "state"
    reason: str

    def __str__(self) -> str:
        return f"{self.check}: {self.reason}"


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
                                           f"{text(rule.since)} or later, not {text(version)}")
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
            return NovaContext(context)
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
