"""Reading from Nova through the downstream app, with the caller's own credentials."""

from __future__ import annotations

import json
import logging

LOG = logging.getLogger(__name__)
# 2.47 embeds the flavor, extra specs included, in the server.
MICROVERSION = "2.47"


def show_server(req, app, instance: str) -> dict | None:
    """The server as the caller may see it, or None when Nova will not show it."""
    path = req.path_info
    prefix = path[: path.index("/servers/")]
    sub = req.subrequest(f"{prefix}/servers/{instance}", MICROVERSION)
    resp = sub.get_response(app)
    if resp.status_int != 200:
        LOG.debug("server %s look-up: HTTP %s", instance, resp.status_int)
        return None
    try:
        server = json.loads(resp.body)["server"]
    except (ValueError, KeyError, TypeError):
        LOG.warning("server %s look-up: unexpected answer from Nova", instance)
        return None
    return server if isinstance(server, dict) else None
