"""``novaproxy scale``: an operator brings a server's vCPUs online or offline.

It sends the proxy's own server action (:mod:`novaproxy.scaling`) and says what the
guest reports afterwards, or why nothing changed::

    novaproxy scale SERVER (--online N | --up | --down) [--endpoint URL]

Unlike the other commands it talks to the compute API, not Redis, with a keystoneauth1
session made from the usual ``--os-*`` options and ``OS_*`` variables (``password`` by
default, as other OpenStack CLIs; ``admin_token`` with ``--os-endpoint`` and
``--os-token`` where there is no Keystone). The endpoint is the catalog's compute
endpoint — the proxy, where it stands in for Nova — unless ``--endpoint`` names it.
Nothing is logged, so tokens and passwords never reach the terminal.

The parsing and formatting here are pure; :func:`cmd_scale` does the I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass

from keystoneauth1 import adapter, loading
from keystoneauth1 import exceptions as ks_exceptions

from novaproxy import headers, scaling

# Only reads depend on it (GET /servers); the action's body is the proxy's own.
MICROVERSION = "2.47"
RESULT_HEADER = headers.RESULT_HEADER
MESSAGE_LIMIT = 500  # characters of an answer shown when it is not Nova's envelope
PROG = "novaproxy scale"
NOVA_UNKNOWN_ACTION = "There is no such action"  # Nova's 400 for an action it lacks
# Answers that mean the action was not carried out: the caller's mistakes and refusals,
# and 503, the proxy's "the guest or its agent cannot be asked". Other 5xx (a gateway
# timing out, a crash) may come after the guest changed.
NOT_DONE_5XX = 503


class UsageError(Exception):
    """The command line cannot work as given (exit status 2); says what to add."""


class ScaleFailed(Exception):
    """The server was not scaled, or what happened is unknown (exit status 1)."""


@dataclass(frozen=True)
class Result:
    """The guest's own view after the change, as the proxy answered it."""

    online: frozenset
    offline: frozenset
    plugged: int
    operation: str


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of vCPUs, at least 1: {text!r}")
    return int(text)


def add_parser(sub, argv: list) -> argparse.ArgumentParser:
    """The ``scale`` subcommand, with keystoneauth1's auth and session options for the
    plugin ``argv`` (or ``OS_AUTH_TYPE``) names; an unknown plugin is reported only
    when ``scale`` runs, so the Redis commands never depend on it."""
    parser = sub.add_parser("scale", help="bring a server's vCPUs online or offline",
                            description="Bring a server's vCPUs online or offline inside "
                            "its guest (they stay plugged); exit status 0 when the guest "
                            "reports the change, 1 when it was refused or failed, 2 for a "
                            "command line that cannot work.")
    parser.add_argument("server", metavar="SERVER",
                        help="the server's UUID, or its name when exactly one server has it")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--online", type=_positive, metavar="N",
                      help="the number of vCPUs to have online")
    what.add_argument("--up", action="store_const", dest="step", const="up",
                      help="one more vCPU online")
    what.add_argument("--down", action="store_const", dest="step", const="down",
                      help="one fewer vCPU online")
    parser.add_argument("--endpoint", metavar="URL",
                        help="the compute endpoint (the proxy's), instead of the catalog's")
    parser.add_argument("--os-interface", default=os.environ.get("OS_INTERFACE", "public"),
                        help="the catalog interface (default: OS_INTERFACE or public)")
    parser.add_argument("--os-region-name", default=os.environ.get("OS_REGION_NAME"),
                        help="the catalog region (default: OS_REGION_NAME)")
    loading.register_session_argparse_arguments(parser)
    try:
        loading.register_auth_argparse_arguments(parser, argv, default="password")
    except ks_exceptions.NoMatchingPlugin as exc:
        parser.set_defaults(auth_error=f"no such keystoneauth1 auth type: {exc.name}")
    return parser


def action_body(online: int | None, step: str | None) -> dict:
    """The ``novaproxy-scale`` action for ``--online N`` or ``--up``/``--down``."""
    return {scaling.ACTION: {"online": online} if online is not None else {"step": step}}


def _cpus(value: object, what: str) -> frozenset:
    found = scaling.cpu_set(value)
    if found is None:
        raise ScaleFailed(f"the proxy answered 200 but its {what!r} is not a list of vCPUs: "
                          f"{value!r:.80}; the change may have happened, see novaproxy status")
    return found


def parse_result(body: object) -> Result:
    """The 200 answer's ``{"novaproxy-scale": {...}}``; anything else is ScaleFailed
    (the action was accepted, so the change may have happened)."""
    result = body.get(scaling.ACTION) if isinstance(body, dict) else None
    if not isinstance(result, dict):
        raise ScaleFailed(f"the proxy answered 200 without a {scaling.ACTION} result; "
                          "the change may have happened, see novaproxy status")
    plugged = result.get("plugged")
    if isinstance(plugged, bool) or not isinstance(plugged, int):
        raise ScaleFailed(f"the proxy answered 200 but 'plugged' is {plugged!r:.40}; "
                          "the change may have happened, see novaproxy status")
    return Result(_cpus(result.get("online"), "online"), _cpus(result.get("offline"), "offline"),
                  plugged, str(result.get("operation", "?")))


def format_result(server: str, result: Result) -> str:
    """One line: ``server <id>: 2 of 4 vCPUs online (0-1); vCPUs 2-3 offline (operation X)``."""
    offline = ("none offline" if not result.offline else
               f"vCPU{'s' if len(result.offline) > 1 else ''} "
               f"{scaling.cpu_list(result.offline)} offline")
    return (f"server {server}: {len(result.online)} of {result.plugged} vCPUs online "
            f"({scaling.cpu_list(result.online)}); {offline} (operation {result.operation})")


def format_error(status: int, body: str, marker: str | None) -> str:
    """The HTTP status, Nova's fault name and message (or the start of the body), for a
    409 the ``OpenStack-Novaproxy-Result`` marker, and a hint when Nova itself answered
    (the endpoint is not the proxy's)."""
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = None
    text = body.strip()[:MESSAGE_LIMIT] or "(no body)"
    if isinstance(envelope, dict) and len(envelope) == 1:
        (fault, detail), = envelope.items()
        if isinstance(detail, dict) and detail.get("message"):
            text = f"{fault}: {str(detail['message'])[:MESSAGE_LIMIT]}"
    line = f"HTTP {status} {text}"
    if status == 400 and NOVA_UNKNOWN_ACTION in text:
        line += " (Nova answered, not the proxy: pass the proxy's endpoint with --endpoint)"
    if status == 409:
        line += f" [{RESULT_HEADER}: {marker or 'none: a conflict of Nova or the proxy itself'}]"
    return line


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def pick_server(name: str, servers: object) -> str:
    """The id of the one server named exactly ``name`` in a ``GET /servers?name=``
    answer (Nova matches the name as a pattern); UsageError when none or several."""
    listed = servers.get("servers") if isinstance(servers, dict) else None
    if not isinstance(listed, list):
        raise ScaleFailed("not scaled: the server list is not a JSON object with 'servers'")
    ids = sorted(s.get("id", "?") for s in listed if isinstance(s, dict) and s.get("name") == name)
    if not ids:
        raise UsageError(f"no server you can see is named {name!r}: pass its UUID")
    if len(ids) > 1:
        raise UsageError(f"{len(ids)} servers are named {name!r}: pass the UUID of one of "
                         + ", ".join(ids))
    return ids[0]


def _compute(args) -> adapter.Adapter:
    """The compute adapter from the parsed options; UsageError on missing credentials."""
    if getattr(args, "auth_error", None):
        raise UsageError(args.auth_error)
    try:
        auth = loading.load_auth_from_argparse_arguments(args)
    except ks_exceptions.MissingRequiredOptions as exc:
        flags = ", ".join(f"--os-{opt.name} (OS_{opt.name.upper().replace('-', '_')})"
                          for opt in exc.options)
        raise UsageError(f"auth type {args.os_auth_type} needs {flags}") from None
    sess = loading.load_session_from_argparse_arguments(args, auth=auth, app_name=PROG.replace(
        " ", "-"))
    return adapter.Adapter(sess, service_type="compute", interface=args.os_interface,
                           region_name=args.os_region_name, endpoint_override=args.endpoint,
                           default_microversion=MICROVERSION)


def _server_id(compute: adapter.Adapter, server: str) -> str:
    if is_uuid(server):
        return server.lower()
    resp = compute.get("/servers", params={"name": f"^{re.escape(server)}$"}, raise_exc=False)
    if resp.status_code != 200:
        raise ScaleFailed(f"not scaled: looking up the server named {server!r}: "
                          + format_error(resp.status_code, resp.text, None))
    try:
        return pick_server(server, resp.json())
    except ValueError:
        raise ScaleFailed("not scaled: the server list is not JSON") from None


def scale(compute: adapter.Adapter, server: str, body: dict) -> str:
    """POST the action and return the line to print; ScaleFailed says why not."""
    server_id = _server_id(compute, server)
    resp = compute.post(f"/servers/{server_id}/action", json=body, raise_exc=False)
    if resp.status_code != 200:
        error = format_error(resp.status_code, resp.text, resp.headers.get(RESULT_HEADER))
        if resp.status_code < 500 or resp.status_code == NOT_DONE_5XX:
            raise ScaleFailed(f"not scaled: {error}")
        raise ScaleFailed(f"{error}; whether it was scaled is unknown: see novaproxy status")
    try:
        answer = resp.json()
    except ValueError:
        answer = None
    return format_result(server_id, parse_result(answer))


def printable(text: str) -> str:
    """``text`` with control characters escaped: messages carry what guests said (a
    NACK's reasons), which must not drive the operator's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cmd_scale(args) -> int:
    """0 when the guest reports the change, 1 when it was refused or failed, 2 for a
    command line that cannot work."""
    server = args.server
    try:
        print(printable(scale(_compute(args), args.server,
                              action_body(args.online, args.step))))
        return 0
    except UsageError as exc:
        print(printable(f"{PROG}: error: {exc}"), file=sys.stderr)
        return 2
    except ScaleFailed as exc:
        print(printable(f"{PROG}: server {server}: {exc}"), file=sys.stderr)
        return 1
    except ks_exceptions.ConnectionError as exc:  # refused, reset or timed out
        print(printable(f"{PROG}: server {server}: no answer ({str(exc)[:MESSAGE_LIMIT]}); "
                        "if the request got through, whether it was scaled is unknown: see "
                        "novaproxy status"), file=sys.stderr)
        return 1
    except ks_exceptions.ClientException as exc:  # no catalog entry, unreachable, ...
        print(printable(f"{PROG}: server {server}: not scaled: {type(exc).__name__}: "
                        f"{str(exc)[:MESSAGE_LIMIT]}"), file=sys.stderr)
        return 1
