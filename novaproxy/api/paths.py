"""The request path as Nova's router will see it.

Pure. A client may spell one Nova URL many ways: ``/v2.1//servers/ID/action``,
``/v2.1/servers/ID%2Faction``, ``/v2.1/%73ervers/ID/action`` all reboot the
server (measured against nova-api: its WSGI server decodes the path once,
``%2F`` included, and its router treats runs of ``/`` as one). The filter must
classify the request Nova will act on, not the text the client sent, or a
spelling becomes a way around the guest's veto. So:

- :func:`routed_path` gives PATH_INFO decoded and collapsed exactly as Nova's
  router will see it, whatever the WSGI server in front of us left encoded
  (cheroot keeps ``%2F``; others decode it), and
- a request classified as a lifecycle operation is forwarded under that very
  path (the filter rewrites PATH_INFO), so what reached Nova is what the guest
  was asked about. Every other request goes on exactly as the client sent it.

WSGI strings are "native strings" (PEP 3333): the path's bytes read as
latin-1. Everything here keeps them that way, so a path that is not UTF-8 is
handled like any other and reaches Nova unchanged.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

_SLASHES = re.compile(r"/{2,}")
_ENCODED_SLASH = re.compile(r"%(2[fF])")


def decoded(raw_path: str) -> str:
    """``raw_path`` percent-decoded once, as a native string."""
    return unquote_to_bytes(raw_path).decode("latin-1")


def _with_encoded_slashes(path: str) -> str:
    """``path`` with its ``%2F`` spelled one way (cheroot upper-cases the ``%2f`` it keeps)."""
    return _ENCODED_SLASH.sub("%2F", path)


def raw_path(environ: dict) -> str | None:
    """The path of the request line as the client sent it, if the server kept it."""
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if not raw or not raw.startswith("/"):
        return None
    return raw.partition("?")[0]


def client_path(environ: dict) -> str | None:
    """The client's raw path, if it still names this request: the WSGI server decoded
    it into SCRIPT_NAME + PATH_INFO (fully, or all but ``%2F``), and no middleware has
    rewritten the path since. None otherwise."""
    raw = raw_path(environ)
    if raw is None:
        return None
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path == decoded(raw):
        return raw
    kept = decoded(_ENCODED_SLASH.sub(r"%25\1", raw))  # decoded all but "%2F"
    if _with_encoded_slashes(path) == _with_encoded_slashes(kept):
        return raw
    return None


def routed_path(environ: dict) -> str:
    """PATH_INFO as Nova's router will route it: decoded once, ``/`` runs collapsed.

    The client's raw path is used while it still names this request: the WSGI
    server may have left ``%2F`` encoded, which Nova's server will decode.
    Otherwise PATH_INFO is what a server decoded, which is also what Nova sees (in
    nova-api's own pipeline), or what a filter in front of us rewrote it to.
    """
    script = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "")
    raw = client_path(environ)
    if raw is not None:
        full = decoded(raw)
        if full.startswith(script):
            path = full[len(script):]
    return _SLASHES.sub("/", path)
