"""The forwarding app: a reverse proxy to the Nova API.

Keeps method, path, query string, end-to-end headers (Host included) and body
as they came, and hands back Nova's status line, headers and body byte for
byte, streamed. Connections to Nova are pooled by urllib3.

    [app:forward]
    paste.app_factory = novaproxy.api.forward:app_factory
    upstream = http://nova-api:8774
"""

from __future__ import annotations

import functools
import logging
from urllib.parse import quote, urlsplit

import urllib3
import webob

from novaproxy.api import paths

LOG = logging.getLogger(__name__)
CHUNK = 64 * 1024
# RFC 9110 §7.6.1: hop-by-hop headers concern one connection, never forwarded.
# A filter may bound one request's wait for Nova below read_timeout (seconds, a float):
# the negotiation filter's server look-ups, which a caller's request waits for.
TIMEOUT_ENVIRON = "novaproxy.forward.read_timeout"
HOP_BY_HOP = frozenset(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"])


def _hop_by_hop(connection_header: str | None) -> frozenset:
    """Hop-by-hop headers, including those the Connection header names."""
    named = {h.strip().lower() for h in (connection_header or "").split(",") if h.strip()}
    return HOP_BY_HOP | named


def request_headers(environ: dict) -> dict:
    """The end-to-end headers of a WSGI request, with their usual spelling."""
    headers = {}
    for key, value in environ.items():
        if not isinstance(value, str):
            continue  # middleware in front may leave None for a header it removed
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key.replace("_", "-").title()
        else:
            continue
        headers[name] = value
    drop = _hop_by_hop(environ.get("HTTP_CONNECTION"))
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def request_target(environ: dict) -> str:
    """Path and query as the client sent them.

    The server's raw request URI is used when it still names the request being
    forwarded (a filter may have changed the path, as sub-requests and the
    negotiation filter's canonical path do); otherwise the WSGI path is quoted
    again from its bytes (PEP 3333: a native string holds the path's bytes as
    latin-1), so a UTF-8 or non-UTF-8 path reaches Nova as the client sent it.
    """
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    raw = paths.client_path(environ)
    if raw is not None:
        raw_query = (environ.get("REQUEST_URI") or environ.get("RAW_URI")).partition("?")[2]
        if raw_query == query:
            return f"{raw}?{raw_query}" if raw_query else raw
    # "%" is quoted too: the path is decoded, so a "%" in it is a character (and the
    # negotiation filter classified it as one), never the start of an escape.
    path = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
    return f"{path}?{query}" if query else path


class _Body:
    """The upstream response body as a WSGI iterable that returns its connection."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def __iter__(self):
        yield from self._response.stream(CHUNK, decode_content=False)

    def close(self) -> None:
        self._response.release_conn()


class ForwardApp:
    def __init__(self, upstream: str, connect_timeout: float, read_timeout: float,
                 pool_size: int) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"[app:forward] upstream = {upstream!r}: must be an http(s) URL "
                             "such as http://nova-api:8774")
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool = urllib3.connection_from_url(
            self.upstream, maxsize=pool_size, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))

    def __call__(self, environ: dict, start_response):
        method = environ["REQUEST_METHOD"]
        target = request_target(environ)
        headers = request_headers(environ)
        body = None
        if environ.get("CONTENT_LENGTH"):
            body = webob.Request(environ).body_file  # reads exactly Content-Length bytes
        elif environ.get("HTTP_TRANSFER_ENCODING"):
            # Chunked: the server's input stream ends where the request body does.
            body = iter(functools.partial(environ["wsgi.input"].read, CHUNK), b"")
        read_timeout = min(float(environ.get(TIMEOUT_ENVIRON, self.read_timeout)),
                           self.read_timeout)
        try:
            response = self.pool.urlopen(
                method, target, body=body, headers=headers, redirect=False,
                preload_content=False, decode_content=False,
                chunked=body is not None and "Content-Length" not in headers,
                timeout=urllib3.Timeout(connect=self.connect_timeout, read=read_timeout))
        except urllib3.exceptions.HTTPError as exc:
            LOG.error("%s %s: Nova at %s unreachable: %s", method, target, self.upstream, exc)
            fault = webob.Response(status=502, content_type="application/json", charset="UTF-8")
            fault.json_body = {"badGateway": {
                "code": 502, "message": f"the Nova API at {self.upstream} is unreachable"}}
            return fault(environ, start_response)
        drop = _hop_by_hop(response.headers.get("Connection"))
        start_response(f"{response.status} {response.reason or ''}".rstrip(),
                       [(k, v) for k, v in response.headers.items() if k.lower() not in drop])
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= CHUNK:
            # Most Nova answers are small: one read, and the connection goes back at once.
            data = response.read(decode_content=False)
            response.release_conn()
            return [data]
        return _Body(response)


def app_factory(global_conf: dict, upstream: str = "", connect_timeout: str = "10",
                read_timeout: str = "300", pool_size: str = "100", **_unused):
    """Paste entry point; ``upstream`` is the Nova endpoint root, e.g. http://nova:8774."""
    try:
        timeouts = float(connect_timeout), float(read_timeout)
        size = int(pool_size)
    except ValueError as exc:
        raise ValueError(f"[app:forward] {exc}: timeouts and pool_size must be numbers") from None
    return ForwardApp(upstream, timeouts[0], timeouts[1], size)
