"""HTTP requests sent exactly as written: the request target is not normalised or quoted.

Real clients tidy a URL before sending it; an attacker's does not. ``http.client``
puts the target on the request line verbatim, so a test can send ``//``, ``%2F``
or bytes that are not UTF-8 and see what the server makes of them.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from harness.stack import ADMIN_TOKEN, MICROVERSION


def request(base_url: str, method: str, target: str, body: bytes = b"",
            token: str = ADMIN_TOKEN, timeout: float = 60) -> tuple:
    """``(status, body)`` of ``method target`` sent verbatim to ``base_url``."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.putheader("X-Auth-Token", token)
        conn.putheader("OpenStack-API-Version", f"compute {MICROVERSION}")
        conn.putheader("Content-Length", str(len(body)))
        if body:
            conn.putheader("Content-Type", "application/json")
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
