"""Who asks: the caller's authorisation for an action, as Nova's policy would decide it.

Inside nova-api's pipeline, Nova's own enforcer through its request context
(:class:`NovaContext`); in a standalone proxy, Nova's rules through oslo.policy
(:class:`NovaPolicy`) for the identity keystonemiddleware's auth_token
validated. ``allowed`` answers None where the rule cannot be decided here:
that is never a refusal.
"""

from __future__ import annotations

import logging
import os

from novaproxy.api import nova_rules

LOG = logging.getLogger(__name__)


class NovaContext:
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

    def caller(self, token) -> Credentials:
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
        return Credentials(self, creds, creds["is_admin"] if known else None)


class Credentials:
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
