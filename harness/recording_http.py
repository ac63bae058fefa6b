"""A recording HTTP endpoint for tests: what a client really sent, answered from a script.

Stands in for a service we do not run (Masakari): every request is kept
(method, path with query, headers, JSON body) and answered with the next
scripted ``(status, body)``, then with the default answer.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.processes import free_port


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    headers: dict  # as sent; look names up case-insensitively with header()
    body: object  # the decoded JSON, or the raw text when it is not JSON, None when empty

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class RecordingEndpoint:
    def __init__(self, script: list | tuple = (), default: tuple = (200, {})) -> None:
        """``script``: the first answers, in order, as (status, body) with a JSON-able
        body (None: no body); ``default``: the answer once the script is used up."""
        self.requests: list[Recorded] = []
        self._script = list(script)
        self._default = default
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="recording-http",
                                        daemon=True)
        self._thread.start()

    def _answer(self, request: Recorded) -> tuple:
        with self._lock:
            self.requests.append(request)
            return self._script.pop(0) if self._script else self._default

    def _handler(self) -> type:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                status, answer = endpoint._answer(
                    Recorded(self.command, self.path, dict(self.headers.items()), body))
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args) -> None:  # keep test output clean
                pass

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
