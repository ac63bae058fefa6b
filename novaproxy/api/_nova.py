"""Reading from Nova through the downstream app, with the caller's own credentials."""

from __future__ import annotations

import json
import logging

LOG = logging.getLogger(__name__)
# 2.47 embeds the flavor, extra specs included, in the server.
MICROVERSION = "2.47"


class LookupFailed(Exception):
    """Nova did not show the server, and not because it does not exist for the caller."""


def _show(req, app, resource: str, key: str) -> dict | None:
    """GET ``resource`` as the caller: the object, None for a 404, else :class:`LookupFailed`."""
    resp = req.subrequest(resource, MICROVERSION).get_response(app)
    if resp.status_int == 404:
        return None
    if resp.status_int != 200:
        if resp.status_int == 502 and b'"badGateway"' in resp.body:  # the forward app's own
            raise LookupFailed(f"Nova could not be reached for GET {resource}")
        raise LookupFailed(f"Nova answered HTTP {resp.status_int} to GET {resource}")
    try:
        body = json.loads(resp.body)[key]
    except (ValueError, KeyError, TypeError):
        body = None
    if not isinstance(body, dict):
        raise LookupFailed(f"Nova's answer to GET {resource} has no {key!r} object")
    return body


def show_server(req, app, instance: str) -> dict | None:
    """The server as the caller may see it; None when Nova has none for the caller
    (the request then gets Nova's own 404). Raises :class:`LookupFailed`."""
    return _show(req, app, f"servers/{instance}", "server")


def show_flavor(req, app, flavor_ref: str) -> dict | None:
    """A flavor as the caller may see it, or None (it only adds detail to a notice)."""
    try:
        return _show(req, app, f"flavors/{flavor_ref}", "flavor")
    except LookupFailed as exc:
        LOG.debug("flavor look-up: %s", exc)
        return None
