"""The agent's view of Nova: a keystoneauth1 session with the service's credentials.

A section of the agent config (``[nova]``, ``[masakari]``) is read with
keystoneauth1's own plugin loaders: ``auth_type`` plus that plugin's options
(``password``: auth_url, username, password, project_name, user_domain_name,
project_domain_name, ...; ``admin_token``: endpoint and token), and
optionally ``endpoint_override``, ``region_name``, ``interface``, ``cafile``,
``insecure``, ``timeout``. Values are never logged.

Besides reading servers, Nova is where the monitor's recovery actions go (hard
reboot, stop) and where it learns which servers this host should be running.
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

from keystoneauth1 import adapter, loading, session
from keystoneauth1 import exceptions as ks_exceptions
from requests import Response

from novaproxy import headers

# 2.47: the flavor (with its extra specs) is embedded in the server; the admin's
# view includes the host.
MICROVERSION = "2.47"
# 2.58: instance actions can be listed from a time on (``changes-since``).
ACTIONS_MICROVERSION = "2.58"
# 2.71: a server lists its server groups (``server_groups``); 2.64: a group has one policy.
GROUPS_MICROVERSION = "2.71"
SESSION_KEYS = ("endpoint_override", "region_name", "interface", "cafile", "insecure", "timeout")
MESSAGE_LIMIT = 500  # characters of a service's error message kept in exceptions and results


class ConfigError(ValueError):
    """A section of the agent config that cannot give a working client; says what to fix."""


class NovaError(Exception):
    """A Nova call that did not happen: what was asked, the HTTP status (None when
    Nova was not reached) and Nova's own message, so logs and audits say why."""

    def __init__(self, what: str, status: int | None, message: str) -> None:
        super().__init__(f"{what}: " + (f"HTTP {status}: " if status else "") + message)
        self.what = what
        self.status = status
        self.message = message


class NovaRefused(NovaError):
    """Nova answered and will not do it (4xx, e.g. 409 while the server is in a task
    state): asking again unchanged does not help."""


class NovaUnavailable(NovaError):
    """Nova could not be asked (connection failure, 5xx): asking later may work."""


def fault_message(resp: Response) -> str:
    """The message of an OpenStack error envelope (``{"conflictingRequest": {"code": 409,
    "message": ...}}``, as Nova and Masakari answer), else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for fault in body.values():
            if isinstance(fault, dict) and fault.get("message"):
                return str(fault["message"])[:MESSAGE_LIMIT]
    return (resp.text.strip() or resp.reason or "")[:MESSAGE_LIMIT]


class Nova:
    def __init__(self, compute: adapter.Adapter) -> None:
        self.compute = compute

    def _request(self, method: str, path: str, what: str, **kwargs) -> Response:
        try:
            return self.compute.request(path, method, raise_exc=False, **kwargs)
        except ks_exceptions.ClientException as exc:
            raise NovaUnavailable(what, None, str(exc)[:MESSAGE_LIMIT]) from None

    @staticmethod
    def _failure(what: str, resp: Response) -> NovaError:
        error = NovaRefused if 400 <= resp.status_code < 500 else NovaUnavailable
        return error(what, resp.status_code, fault_message(resp))

    def server(self, instance: str) -> dict | None:
        """The server as the service sees it; None once Nova no longer knows it.

        Any other failure is NovaUnavailable: the caller reads again next round.
        """
        what = f"GET /servers/{instance}"
        resp = self._request("GET", f"/servers/{instance}", what)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise NovaUnavailable(what, resp.status_code, fault_message(resp))
        return _object(what, resp).get("server")

    def _at_groups_microversion(self, path: str, key: str) -> object:
        """``key`` of the object at ``path`` read at :data:`GROUPS_MICROVERSION`; None
        once Nova no longer knows it. Any other failure is NovaUnavailable."""
        what = f"GET {path}"
        resp = self._request("GET", path, what, microversion=GROUPS_MICROVERSION)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise NovaUnavailable(what, resp.status_code, fault_message(resp))
        return _object(what, resp).get(key)

    def server_with_groups(self, instance: str) -> dict | None:
        """The server (as :meth:`server`) with ``server_groups``, the ids of the server
        groups it is in (Nova allows one), in one read; None once Nova no longer knows
        it. Any other failure is NovaUnavailable."""
        server = self._at_groups_microversion(f"/servers/{instance}", "server")
        if server is None:
            return None
        if not isinstance(server, dict):
            raise NovaUnavailable(f"GET /servers/{instance}", 200, "no server in the answer")
        gids = server.get("server_groups")
        return {**server, "server_groups": [g for g in gids if isinstance(g, str)]
                if isinstance(gids, list) else []}

    def server_group(self, gid: str) -> dict | None:
        """The server group: ``id``, ``name``, ``policy``, ``members`` (server ids); None
        once Nova no longer knows it. Any other failure is NovaUnavailable."""
        path = f"/os-server-groups/{gid}"
        group = self._at_groups_microversion(path, "server_group")
        if group is None:
            return None
        if not isinstance(group, dict):
            raise NovaUnavailable(f"GET {path}", 200, "no server_group in the answer")
        members = group.get("members")
        return {"id": str(group.get("id", gid)), "name": str(group.get("name") or ""),
                "policy": str(group.get("policy") or ""),
                "members": [m for m in members if isinstance(m, str)]
                if isinstance(members, list) else []}

    def actions(self, instance: str, since: float) -> list[dict]:
        """The server's instance actions updated since ``since`` (a Unix time): each
        with Nova's ``action`` name, ``request_id``, ``start_time`` and ``message``
        ("Error" once one of its events failed). Empty once Nova no longer knows
        the server; any other failure is NovaUnavailable."""
        what = f"GET /servers/{instance}/os-instance-actions"
        changes_since = datetime.fromtimestamp(max(since, 0), timezone.utc)
        resp = self._request("GET", f"/servers/{instance}/os-instance-actions", what,
                             params={"changes-since": changes_since.isoformat()},
                             microversion=ACTIONS_MICROVERSION)
        if resp.status_code == 404:
            return []
        if resp.status_code != 200:
            raise NovaUnavailable(what, resp.status_code, fault_message(resp))
        actions = _object(what, resp).get("instanceActions")
        return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []

    def action_events(self, instance: str, request_id: str) -> list[dict]:
        """The events of the server's instance action for Nova request ``request_id``: each
        with its ``event`` name, ``start_time``, ``finish_time`` (None while it runs) and
        ``result``. Empty once Nova no longer knows either; any other failure is
        NovaUnavailable."""
        path = f"/servers/{instance}/os-instance-actions/{request_id}"
        resp = self._request("GET", path, f"GET {path}", microversion=ACTIONS_MICROVERSION)
        if resp.status_code == 404:
            return []
        if resp.status_code != 200:
            raise NovaUnavailable(f"GET {path}", resp.status_code, fault_message(resp))
        action = _object(f"GET {path}", resp).get("instanceAction")
        events = action.get("events") if isinstance(action, dict) else None
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    def _action(self, instance: str, action: dict) -> None:
        """A recovery action: marked so that a negotiation filter in Nova's way lets it
        through unasked (for these service credentials; never voted on)."""
        what = f"{next(iter(action))} of server {instance}"
        resp = self._request("POST", f"/servers/{instance}/action", what, json=action,
                             headers={headers.SKIP_HEADER: headers.RECOVERY})
        if resp.status_code != 202:
            raise self._failure(what, resp)

    def reboot(self, instance: str, hard: bool = True) -> None:
        """Reboot; HARD (the recovery action) also works on a hung, stopped, paused or
        errored server, where Nova refuses a soft one."""
        self._action(instance, {"reboot": {"type": "HARD" if hard else "SOFT"}})

    def stop(self, instance: str) -> None:
        """Power the server off through Nova, so Nova's state agrees with the host's."""
        self._action(instance, {"os-stop": None})

    def servers_on_host(self, host: str, page_size: int | None = None) -> list[dict]:
        """Every server Nova has placed on ``host``, all projects (admin only).

        Nova answers at most ``page_size`` (or its own ``[api] max_limit``) servers
        per page with a ``next`` link carrying the marker; all pages are read.
        """
        what = f"GET /servers/detail?host={host}"
        params: dict = {"all_tenants": 1, "host": host}
        if page_size:
            params["limit"] = page_size
        servers: list[dict] = []
        while True:
            resp = self._request("GET", "/servers/detail", what, params=params)
            if resp.status_code != 200:
                raise self._failure(what, resp)
            body = _object(what, resp)
            servers.extend(body.get("servers", []))
            following = [link["href"] for link in body.get("servers_links", [])
                         if link.get("rel") == "next"]
            if not following:
                return servers
            params["marker"] = parse_qs(urlsplit(following[0]).query)["marker"][0]


def _object(what: str, resp: Response) -> dict:
    """A 200 answer's JSON object; anything else (a proxy's HTML page) is Nova unavailable."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise NovaUnavailable(what, resp.status_code, "the answer is not a JSON object")
    return body


def adapter_from_section(section: dict, name: str, service_type: str,
                         microversion: str | None = None) -> adapter.Adapter:
    """An adapter for ``service_type`` from the ``[name]`` options, or ConfigError
    naming the section and what to fix."""
    auth_type = section.get("auth_type", "").strip()
    if not auth_type:
        raise ConfigError(f"[{name}] auth_type: set it to a keystoneauth1 plugin such as "
                          "password or admin_token")
    try:
        loader = loading.get_plugin_loader(auth_type)
    except ks_exceptions.NoMatchingPlugin:
        raise ConfigError(f"[{name}] auth_type = {auth_type!r}: no such keystoneauth1 "
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
        raise ConfigError(f"[{name}] unknown option(s) for auth_type {auth_type}: "
                          + ", ".join(sorted(unknown)))
    try:
        auth = loader.load_from_options(**options)
    except ks_exceptions.MissingRequiredOptions as exc:
        names = ", ".join(opt.dest for opt in exc.options)
        raise ConfigError(f"[{name}] auth_type = {auth_type} needs: {names}") from None
    except TypeError as exc:  # a plugin whose loader does not mark its required options
        raise ConfigError(f"[{name}] auth_type = {auth_type}: {exc}") from None
    verify = section.get("cafile") or section.get("insecure", "false").lower() not in (
        "true", "yes", "1")
    try:
        timeout = float(section.get("timeout", "10"))
    except ValueError:
        raise ConfigError(f"[{name}] timeout: must be a number of seconds") from None
    sess = session.Session(auth=auth, verify=verify, timeout=timeout)
    return adapter.Adapter(
        sess, service_type=service_type, interface=section.get("interface", "public"),
        region_name=section.get("region_name") or None,
        endpoint_override=section.get("endpoint_override") or None,
        default_microversion=microversion)


def from_section(section: dict) -> Nova:
    """A Nova client from the ``[nova]`` options, or ConfigError saying what to fix."""
    return Nova(adapter_from_section(section, "nova", "compute", MICROVERSION))
