"""Which Nova API requests are lifecycle operations, and which event they are.

Pure: a request line and body in, an :class:`Operation` or ``None`` out.
``None`` means "not ours": the request goes to Nova untouched, and so does
every malformed request, for Nova to answer exactly as it would have.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from novaproxy import scaling

# Largest action body we read: Nova's own default limit (osapi_max_request_body_size,
# 112 KiB), over which Nova answers 413 too. An action with a bigger body gets our
# 413 (BodyTooLarge) instead of going on unread, so no padding can carry an action
# past the guest, whatever Nova's setting.
MAX_BODY = 112 * 1024


class BodyTooLarge(ValueError):
    """An action's body beyond :data:`MAX_BODY`: it cannot be classified, so not forwarded."""

    def __init__(self) -> None:
        super().__init__(f"Request is too large: a server action's body is limited to "
                         f"{MAX_BODY} bytes (Nova's default osapi_max_request_body_size)")


@dataclass(frozen=True)
class Operation:
    """A lifecycle operation on one server, as the guest will hear of it."""

    instance: str
    action: str  # Nova's name: the action key, "delete", "migration-abort", ...
    event: str  # the event name the guest sees
    details: dict = field(default_factory=dict)


def _reboot(body: dict) -> dict:
    kind = body.get("type") if isinstance(body, dict) else None
    return {"type": kind.upper()} if isinstance(kind, str) else {}


def _keys(*names: str):
    def pick(body: dict) -> dict:
        if not isinstance(body, dict):
            return {}
        return {name: body[name] for name in names if body.get(name) is not None}
    return pick


def _nothing(body) -> dict:
    return {}


# POST /servers/{id}/action bodies: action key -> (event, details from its value).
SERVER_ACTIONS = {
    "os-stop": ("stop", _nothing),
    "os-start": ("start", _nothing),
    "reboot": ("reboot", _reboot),
    "pause": ("pause", _nothing),
    "unpause": ("unpause", _nothing),
    "suspend": ("suspend", _nothing),
    "resume": ("resume", _nothing),
    "resize": ("resize", _keys("flavorRef")),
    "confirmResize": ("resize-confirm", _nothing),
    "revertResize": ("resize-revert", _nothing),
    "migrate": ("migrate", _keys("host")),
    "os-migrateLive": ("live-migrate", _keys("host", "block_migration")),
    "shelve": ("shelve", _nothing),
    "shelveOffload": ("shelve-offload", _nothing),
    "unshelve": ("unshelve", _keys("availability_zone", "host")),
    "rebuild": ("rebuild", _keys("imageRef")),
    "evacuate": ("evacuate", _keys("host")),
    "forceDelete": ("delete", _nothing),
    "restore": ("restore", _nothing),
    "trigger_crash_dump": ("crash-dump", _nothing),
    "rescue": ("rescue", _nothing),
    "unrescue": ("unrescue", _nothing),
}

# Every event name the table can produce (policy keys are validated against it), and
# the two of vCPU scaling, whose action is the proxy's own (SCALE).
EVENTS = frozenset([event for event, _ in SERVER_ACTIONS.values()]
                   + ["delete", "live-migrate-complete", "live-migrate-abort"]
                   + list(scaling.EVENTS))
# The proxy's own server action (novaproxy.api.scale): never forwarded. Classified
# under its action name as event; the event proper (scale-down or scale-up) is known
# once the guest's vCPUs are read.
SCALE = scaling.ACTION

# [/v2 or /v2.1][/{project_id}]/servers/{id}[/...], matched against the path as
# Nova's router sees it (novaproxy.api.paths.routed_path). The filter may sit in
# front of the versioned app (standalone) or inside it (nova's pipeline, where
# the version prefix is already in SCRIPT_NAME), so the prefix is optional.
# Nova answers 404 to a trailing slash on these routes, so none is matched: the
# guest is not asked about a request Nova will not route (tests/faults prove it).
_SERVER = r"^(?:/v2(?:\.1)?)?(?:/[^/]+)?/servers/(?P<id>[^/]+)"
_ACTION = re.compile(_SERVER + r"/action$")
_SERVER_ONLY = re.compile(_SERVER + r"$")
_MIGRATION_ACTION = re.compile(_SERVER + r"/migrations/(?P<mid>[^/]+)/action$")
_MIGRATION = re.compile(_SERVER + r"/migrations/(?P<mid>[^/]+)$")


def _json_object(body: bytes | None) -> dict | None:
    if not body or len(body) > MAX_BODY:
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def action_route(method: str, path: str) -> bool:
    """A POST Nova routes to a server (or migration) action, whatever its body."""
    return method == "POST" and bool(_ACTION.match(path) or _MIGRATION_ACTION.match(path))


def classify(method: str, path: str, body: bytes | None) -> Operation | None:
    """The lifecycle operation this request asks for, or None.

    ``path``: as Nova's router will see it (:func:`novaproxy.api.paths.routed_path`).
    """
    if method == "POST":
        match = _ACTION.match(path)
        if match:
            action_body = _json_object(body)
            # Nova requires exactly one action key; anything else is Nova's 400.
            if action_body is None or len(action_body) != 1:
                return None
            (action, value), = action_body.items()
            if action == SCALE:
                return Operation(match["id"], SCALE, SCALE, {"body": action_body})
            entry = SERVER_ACTIONS.get(action)
            if entry is None:
                return None
            event, details = entry
            return Operation(match["id"], action, event, details(value))
        match = _MIGRATION_ACTION.match(path)
        if match:
            action_body = _json_object(body)
            if action_body is None or list(action_body) != ["force_complete"]:
                return None
            return Operation(match["id"], "force_complete", "live-migrate-complete",
                             {"migration": match["mid"]})
    elif method == "DELETE":
        match = _SERVER_ONLY.match(path)
        if match:
            return Operation(match["id"], "delete", "delete")
        match = _MIGRATION.match(path)
        if match:
            return Operation(match["id"], "migration-abort", "live-migrate-abort",
                             {"migration": match["mid"]})
    return None
