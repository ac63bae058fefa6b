"""An HTTP fault proxy to put between novaproxy-api and Nova (or any HTTP client and server).

Real sockets, one thread per client connection. Each request is read whole, then, by
the mode in force when it arrived, forwarded to the real upstream or failed:

- ``PASS``: forwarded; the answer relayed (status, headers, body).
- ``ERROR``: answered ``500`` with a Nova-style ``computeFault`` body; upstream never sees it.
- ``RESET``: the connection is reset (RST, no answer); upstream never sees it.
- ``HANG``: read and never answered; the connection stays open until the mode changes
  or the proxy stops, then it is closed without an answer. Upstream never sees it.
- ``DELAY``: forwarded after ``delay`` seconds.

API:

- ``FaultProxy(upstream, timeout=300)``: ``upstream`` is ``http://host:port``; listens on a
  free local port at once; ``.url`` is its ``http://127.0.0.1:port``.
- ``set(mode, delay=0.0, match=None)``: switch at run time (safe from any thread). With
  ``match(method, path) -> bool``, only matching requests get the fault, others pass: e.g.
  ``match=lambda m, p: m == "POST" and p.endswith("/action")`` fails the actions while the
  server look-ups still reach Nova.
- ``requests``: every request seen, in order, as ``Seen(method, path, mode)`` (the mode
  applied to it); ``clear()`` forgets them.
- ``stop()``: stops listening, closes hung connections.

The request line and headers go upstream byte for byte (the path is not decoded or
re-encoded), with ``Connection: close``: one upstream connection per request. The
answer is relayed with its own ``Content-Length`` (a chunked answer is de-chunked).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PASS, ERROR, RESET, HANG, DELAY = "pass", "error", "reset", "hang", "delay"
MODES = (PASS, ERROR, RESET, HANG, DELAY)
# Hop-by-hop headers, and the length: the proxy sets its own.
_NOT_RELAYED = {"connection", "keep-alive", "transfer-encoding", "content-length",
                "proxy-connection", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    mode: str


class FaultProxy:
    def __init__(self, upstream: str, timeout: float = 300.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.timeout = timeout
        self.requests: list = []
        self._lock = threading.Lock()
        self._mode, self._delay, self._match = PASS, 0.0, None
        # Set when the mode changes or the proxy stops: hung and delayed requests end.
        self._changed = threading.Event()
        proxy = self

        class Handler(_Handler):
            fault_proxy = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()

    def set(self, mode: str, delay: float = 0.0, match=None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        with self._lock:
            self._mode, self._delay, self._match = mode, delay, match
            changed, self._changed = self._changed, threading.Event()
        changed.set()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def _decide(self, method: str, path: str) -> tuple:
        """(mode, delay, the event that ends a hang or a delay) for one request, recorded."""
        with self._lock:
            mode = self._mode
            if self._match is not None and not self._match(method, path):
                mode = PASS
            self.requests.append(Seen(method, path, mode))
            return mode, self._delay, self._changed

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            self._changed.set()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the forward app's pool expects
    fault_proxy: FaultProxy

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # ``requests`` is the record

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        proxy = self.fault_proxy
        mode, delay, changed = proxy._decide(self.command, self.path)
        if mode == ERROR:
            self._answer(500, [("Content-Type", "application/json")], json.dumps(
                {"computeFault": {"code": 500, "message": "fault proxy: injected error"}}
            ).encode())
        elif mode == RESET:
            # Linger 0: close() sends RST at once instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif mode == HANG:
            changed.wait()
            self.close_connection = True  # closed without an answer
        else:
            if mode == DELAY:
                changed.wait(delay)  # a change of mode ends the delay early
            self._forward(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _forward(self, body: bytes) -> None:
        head = [self.raw_requestline.rstrip(b"\r\n")]
        for name, value in self.headers.items():
            if name.lower() not in _NOT_RELAYED:
                head.append(f"{name}: {value}".encode("latin-1"))
        head += [b"Connection: close", f"Content-Length: {len(body)}".encode()]
        try:
            with socket.create_connection(self.fault_proxy.upstream,
                                          self.fault_proxy.timeout) as sock:
                sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
                resp = http.client.HTTPResponse(sock, method=self.command)
                resp.begin()
                data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            # Not a fault this proxy was asked for: say so, as a gateway would.
            self._answer(502, [("Content-Type", "text/plain")],
                         f"fault proxy: upstream unreachable: {exc}".encode())
            return
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _NOT_RELAYED]
        self._answer(resp.status, headers, data, resp.reason)

    def _answer(self, status: int, headers: list, data: bytes, reason: str | None = None) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
