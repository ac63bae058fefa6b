"""The agent's view of Nova: a keystoneauth1 session with the service's credentials.

The ``[nova]`` section of the agent config is read with keystoneauth1's own
plugin loaders: ``auth_type`` plus that plugin's options (``password``:
auth_url, username, password, project_name, user_domain_name,
project_domain_name, ...; ``admin_token``: endpoint and token), and
optionally ``endpoint_override``, ``region_name``, ``interface``, ``cafile``,
``insecure``, ``timeout``. Values are never logged.
"""

from __future__ import annotations

from keystoneauth1 import adapter, loading, session
from keystoneauth1 import exceptions as ks_exceptions

# 2.47: the flavor is embedded in the server; the admin's view includes the host.
MICROVERSION = "2.47"
SESSION_KEYS = ("endpoint_override", "region_name", "interface", "cafile", "insecure", "timeout")


class NovaConfigError(ValueError):
    pass


class Nova:
    def __init__(self, compute: adapter.Adapter) -> None:
        self.compute = compute

    def server(self, instance: str) -> dict | None:
        """The server as the service sees it; None once Nova no longer knows it."""
        try:
            resp = self.compute.get(f"/servers/{instance}", raise_exc=False)
        except ks_exceptions.ClientException as exc:
            raise NovaUnavailable(str(exc)) from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise NovaUnavailable(f"GET /servers/{instance}: HTTP {resp.status_code}")
        return resp.json().get("server")


class NovaUnavailable(Exception):
    pass


def from_section(section: dict) -> Nova:
    """A Nova client from the ``[nova]`` options, or NovaConfigError saying what to fix."""
    auth_type = section.get("auth_type", "").strip()
    if not auth_type:
        raise NovaConfigError("[nova] auth_type: set it to a keystoneauth1 plugin such as "
                              "password or admin_token")
    try:
        loader = loading.get_plugin_loader(auth_type)
    except ks_exceptions.NoMatchingPlugin:
        raise NovaConfigError(f"[nova] auth_type = {auth_type!r}: no such keystoneauth1 "
                              "plugin") from None
    options = {}
    for opt in loader.get_options():
        for key in (opt.dest, opt.name):
            if section.get(key) not in (None, ""):
                options[opt.dest] = section[key]
                break
    known = {opt.dest for opt in loader.get_options()} | {o.name for o in loader.get_options()}
    unknown = set(section) - known - set(SESSION_KEYS) - {"auth_type"}
    if unknown:
        raise NovaConfigError(f"[nova] unknown option(s) for auth_type {auth_type}: "
                              + ", ".join(sorted(unknown)))
    try:
        auth = loader.load_from_options(**options)
    except ks_exceptions.MissingRequiredOptions as exc:
        names = ", ".join(opt.dest for opt in exc.options)
        raise NovaConfigError(f"[nova] auth_type = {auth_type} needs: {names}") from None
    verify = section.get("cafile") or section.get("insecure", "false").lower() not in (
        "true", "yes", "1")
    try:
        timeout = float(section.get("timeout", "10"))
    except ValueError:
        raise NovaConfigError("[nova] timeout: must be a number of seconds") from None
    sess = session.Session(auth=auth, verify=verify, timeout=timeout)
    return Nova(adapter.Adapter(
        sess, service_type="compute", interface=section.get("interface", "public"),
        region_name=section.get("region_name") or None,
        endpoint_override=section.get("endpoint_override") or None,
        default_microversion=MICROVERSION))
