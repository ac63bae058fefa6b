"""Reading from Nova through the downstream app, with the caller's own credentials."""

from __future__ import annotations

import json
import logging

LOG = logging.getLogger(__name__)
# 2.47 embeds the flavor, extra specs included, in the server.
MICROVERSION = "2.47"


def _show(req, app, resource: str, key: str) -> dict | None:
    """GET ``resource`` (e.g. ``servers/<id>``) beside the request's own path, as the caller."""
    path = req.path_info
    prefix = path[: path.index("/servers/")]  # version and project, as the caller wrote them
    resp = req.subrequest(f"{prefix}/{resource}", MICROVERSION).get_response(app)
    if resp.status_int != 200:
        LOG.debug("%s look-up: HTTP %s", resource, resp.status_int)
        return None
    try:
        body = json.loads(resp.body)[key]
    except (ValueError, KeyError, TypeError):
        LOG.warning("%s look-up: unexpected answer from Nova", resource)
        return None
    return body if isinstance(body, dict) else None


def show_server(req, app, instance: str) -> dict | None:
    """The server as the caller may see it, or None when Nova will not show it."""
    return _show(req, app, f"servers/{instance}", "server")


def show_flavor(req, app, flavor_ref: str) -> dict | None:
    """A flavor as the caller may see it, or None."""
    return _show(req, app, f"flavors/{flavor_ref}", "flavor")
