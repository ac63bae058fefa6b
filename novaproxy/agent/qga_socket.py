"""qemu-ga over its unix socket: the :class:`~novaproxy.agent.guest_agent.GuestAgent`
of plain QEMU, and of the qemu-ga processes the tests start."""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time

from novaproxy.agent.guest_agent import (
    MAX_REPLY,
    CommandFailed,
    GuestAgentError,
    GuestAgentTimeout,
    GuestAgentUnavailable,
    result_of,
)


class SocketGuestAgent:
    """qemu-ga on a unix socket (plain QEMU, and qemu-ga processes in tests).

    qemu-ga serves one client at a time and keeps no request ids, so after a
    timeout a late reply may still arrive: every call after a timeout starts
    with a fresh ``guest-sync-delimited`` (0xFF, then discard everything up to
    the 0xFF the agent echoes). Calls are serialised by a lock.
    """

    # A guest-exec-status poll costs ~0.1 ms here: poll often.
    poll_cap = 0.002

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._synced = False
        self._lock = threading.Lock()

    def execute(self, command: str, arguments: dict | None = None, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        # Another call to this guest may be under way: wait for it within our own deadline.
        if not self._lock.acquire(timeout=max(timeout, 0)):
            raise GuestAgentTimeout(f"{self.path}: busy with another call until the deadline")
        try:
            return self._call(command, arguments, deadline)
        except GuestAgentTimeout:
            self._synced = False
            raise
        except CommandFailed:
            raise  # an error reply: the exchange completed, the connection is in sync
        except GuestAgentError:
            self._reset()
            raise
        except OSError as exc:
            self._reset()
            raise GuestAgentUnavailable(f"{self.path}: {exc}") from None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _call(self, command: str, arguments: dict | None, deadline: float):
        reused = self._sock is not None
        try:
            if not self._synced:
                self._sync(deadline)
            self._send(command, arguments)
        except (OSError, GuestAgentUnavailable):
            if not reused:
                raise
            # qemu-ga restarted since our last call (the guest rebooted, the
            # agent was restarted): one more try on a fresh connection.
            self._reset()
            self._sync(deadline)
            self._send(command, arguments)
        return result_of(self._read_reply(deadline))

    def _connect(self, deadline: float) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise GuestAgentUnavailable(f"{self.path}: {exc}") from None
            sock.setblocking(False)
            self._sock = sock
            self._buffer.clear()
        return self._sock

    def _sync(self, deadline: float) -> None:
        sock = self._connect(deadline)
        token = random.randrange(1, 2**31)
        sock.sendall(b"\xff" + json.dumps(
            {"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode() + b"\n")
        # Discard everything up to the agent's 0xFF: late replies, partial lines.
        while True:
            marker = self._buffer.find(b"\xff")
            if marker >= 0:
                del self._buffer[: marker + 1]
                break
            self._buffer.clear()
            self._fill(deadline)
        while True:
            reply = self._read_reply(deadline)
            if isinstance(reply, dict) and reply.get("return") == token:
                self._synced = True
                return

    def _send(self, command: str, arguments: dict | None) -> None:
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GuestAgentTimeout(f"{self.path}: no answer in time")
        readable, _, _ = select.select([self._sock], [], [], remaining)
        if not readable:
            raise GuestAgentTimeout(f"{self.path}: no answer in time")
        data = self._sock.recv(65536)
        if not data:
            raise GuestAgentUnavailable(f"{self.path}: agent closed the connection")
        self._buffer += data
        if len(self._buffer) > MAX_REPLY:
            raise GuestAgentError(f"{self.path}: reply larger than {MAX_REPLY} bytes")

    def _read_reply(self, deadline: float):
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end]).strip(b"\xff \r\t")
                del self._buffer[: end + 1]
                if not line:
                    continue
                try:
                    return json.loads(line)
                except ValueError:
                    raise GuestAgentError(f"{self.path}: reply is not JSON") from None
            self._fill(deadline)

    def _reset(self) -> None:
        """Drain, then close: qemu-ga exits if a client leaves replies unread."""
        sock, self._sock = self._sock, None
        self._synced = False
        self._buffer.clear()
        if sock is None:
            return
        try:
            end = time.monotonic() + 0.2
            while time.monotonic() < end and select.select([sock], [], [], 0.05)[0]:
                if not sock.recv(65536):
                    break
        except OSError:
            pass
        sock.close()
