"""A stand-in for the proxy's ``novaproxy-scale`` action, for testing its clients.

The real handler (:mod:`novaproxy.api.scale`) needs the whole system tier, where the CLI
is also run against it (``tests/system/test_scaling.py``), and a guest whose vCPUs can
change needs the vm tier. So this small real WSGI server answers the documented contract
(docs/vcpu-scaling.md), to test every answer the CLI must read in the integration tier:
``POST /v2.1/servers/{id}/action`` with the action decided by the real pure
:mod:`novaproxy.scaling` rules, and ``GET /v2.1/servers?name=`` as Nova lists servers
(the name is a pattern). Each server's guest is a few fields: its vCPUs online, and
whether its applications NACK, a negotiation holds its lock, or its agent does not
answer.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from novaproxy import flavor, scaling
from novaproxy.api.responses import IN_PROGRESS, REJECTED, RESULT_HEADER

ENABLED = {flavor.VCPU_SCALING: "true"}


@dataclasses.dataclass
class Server:
    id: str
    name: str
    plugged: int
    online: set
    specs: dict
    rejected_by: str = ""  # a NACK's reasons: the guest's applications refuse
    busy: bool = False  # another negotiation holds the server's lock
    unreachable: str = ""  # why the guest or its agent cannot be asked
    delay: float = 0.0  # seconds the guest takes to answer
    crashes: bool = False  # the proxy fails (500) after the guest changed


@dataclasses.dataclass
class Seen:
    method: str
    path: str  # with the query string
    headers: dict  # WSGI names: HTTP_X_AUTH_TOKEN, ...
    body: object


class _Threading(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


def _fault(status: str, name: str, message: str, marker: str | None = None) -> tuple:
    code = int(status.split()[0])
    extra = [(RESULT_HEADER, marker)] if marker else []
    return status, {name: {"code": code, "message": message}}, extra


class ScaleProxy:
    def __init__(self, token: str | None = "admin:demo") -> None:
        """``token``: the one X-Auth-Token accepted (None: requests need none)."""
        self.token = token
        self.servers: dict[str, Server] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._app, server_class=_Threading,
                                  handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v2.1"
        self._thread = threading.Thread(target=self.server.serve_forever, name="scale-proxy",
                                        daemon=True)
        self._thread.start()

    def add(self, name: str, plugged: int, online: int | None = None,
            specs: dict | None = None, **guest) -> Server:
        """A server whose flavor has ``plugged`` vCPUs, ``online`` of them online
        (all by default); scaling is enabled unless ``specs`` say otherwise."""
        server = Server(str(uuid.uuid4()), name, plugged, set(range(online or plugged)),
                        ENABLED if specs is None else specs, **guest)
        self.servers[server.id] = server
        return server

    def _app(self, environ: dict, start_response) -> list:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        query = environ.get("QUERY_STRING", "")
        self.requests.append(Seen(environ["REQUEST_METHOD"], environ["PATH_INFO"]
                                  + (f"?{query}" if query else ""),
                                  {k: v for k, v in environ.items() if k.startswith("HTTP_")},
                                  body))
        if self.token is not None and environ.get("HTTP_X_AUTH_TOKEN") != self.token:
            status, answer, extra = "401 Unauthorized", {"error": {
                "code": 401, "message": "The request you have made requires authentication."}}, []
        else:
            status, answer, extra = self._route(environ["REQUEST_METHOD"],
                                                environ["PATH_INFO"], query, body)
        data = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data))), *extra])
        return [data]

    def _route(self, method: str, path: str, query: str, body: object) -> tuple:
        if method == "GET" and path == "/v2.1/servers":
            pattern = re.compile(parse_qs(query).get("name", [""])[0])
            return "200 OK", {"servers": [
                {"id": s.id, "name": s.name, "links": []}
                for s in self.servers.values() if pattern.search(s.name)]}, []
        match = re.fullmatch(r"/v2\.1/servers/([^/]+)/action", path)
        if method != "POST" or not match:
            return _fault("404 Not Found", "itemNotFound", "The resource could not be found.")
        server = self.servers.get(match.group(1))
        if server is None:
            return _fault("404 Not Found", "itemNotFound",
                          f"Instance {match.group(1)} could not be found.")
        with self._lock:  # one operation per server, as the proxy's negotiation lock
            return self._scale(server, body)

    def _scale(self, server: Server, body: object) -> tuple:
        try:
            request = scaling.parse_action(body)
            online = frozenset(server.online)
            wanted = scaling.target(request, online,
                                    scaling.policy(server.specs, server.plugged))
        except scaling.ScaleError as exc:
            return _fault("400 Bad Request", "badRequest", str(exc))
        event = scaling.SCALE_DOWN if wanted < len(online) else scaling.SCALE_UP
        if server.busy:
            return _fault("409 Conflict", "conflictingRequest",
                          f"{IN_PROGRESS}: another operation on server {server.id} is being "
                          "negotiated", IN_PROGRESS)
        if server.unreachable:
            return _fault("503 Service Unavailable", "serviceUnavailable",
                          f"{event} of server {server.id}: {server.unreachable}")
        time.sleep(server.delay)
        if server.rejected_by:
            return _fault("409 Conflict", "conflictingRequest",
                          f"{REJECTED}: the guest rejected {event} of server {server.id}: "
                          f"{server.rejected_by}", REJECTED)
        if wanted < len(online):
            server.online -= scaling.to_offline(online, len(online) - wanted)
        else:
            server.online |= scaling.to_online(online, frozenset(range(server.plugged)),
                                               wanted - len(online))
        if server.crashes:
            return _fault("500 Internal Server Error", "computeFault",
                          "Unexpected API Error.")
        return "200 OK", {scaling.ACTION: {
            "online": sorted(server.online),
            "offline": sorted(set(range(server.plugged)) - server.online),
            "plugged": server.plugged, "operation": str(uuid.uuid4())}}, []

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
