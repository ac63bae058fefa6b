"""The Python client library for guest applications.

    from guestd.client import Application, Vote

    def vote(notice):
        if replication_in_progress():
            return Vote.reject("replication in progress")
        return Vote.accept()

    def notice(notice):          # prepare, end and abort notices
        if notice.phase == "prepare":
            flush()

    Application("db", events=["reboot", "stop"], on_vote=vote, on_notice=notice).run()

``run`` blocks and reconnects when guestd restarts; ``start`` does the same in
a daemon thread. A handler that raises, or does not answer in time, counts as
silence for the host's policy; the deadline is ``notice.timeout`` seconds.

An application reports its health whenever it changes (from any thread)::

    app = Application("db").start()
    app.report_health(False, "replica lost its primary", action="reboot")

guestd publishes the latest report to the host until the application reports
again or disconnects; the client re-sends it after reconnecting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from guestd import protocol

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    """One phase of one lifecycle operation, as the application sees it."""

    id: str
    instance: str
    event: str
    phase: str
    timeout: float
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Vote:
    accepted: bool
    reason: str = ""

    @classmethod
    def accept(cls) -> Vote:
        return cls(True)

    @classmethod
    def reject(cls, reason: str) -> Vote:
        return cls(False, reason)


class Application:
    def __init__(self, name: str, events=("*",), on_vote=None, on_notice=None,
                 socket_path: str | None = None) -> None:
        self.name = name
        self.events = list(events)
        self.on_vote = on_vote or (lambda notice: Vote.accept())
        self.on_notice = on_notice or (lambda notice: None)
        self.socket_path = socket_path or os.environ.get("GUESTD_SOCKET", protocol.DEFAULT_SOCKET)
        self.registered = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        # Answers and health reports come from several threads; it also keeps a
        # report from slipping in between a new connection and its register.
        self._send_lock = threading.Lock()
        self._health: bytes | None = None  # the latest report, re-sent on every connection

    def start(self) -> Application:
        threading.Thread(target=self.run, name=f"guestd-app-{self.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def report_health(self, healthy: bool, reason: str = "",
                      action: str = protocol.LOG_ONLY) -> None:
        """Tell guestd (and so the host) how this application is doing.

        ``action`` is what the host should do while it is unhealthy: ``log``,
        ``reboot`` or ``stop`` this VM. Sent at once when connected, and again
        after every reconnection until the next report.
        """
        if action not in protocol.ACTIONS:
            raise ValueError(f"action must be one of {', '.join(protocol.ACTIONS)}, "
                             f"not {action!r}")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a string, not {type(reason).__name__}")
        report = protocol.encode(protocol.health(healthy, reason, action))
        with self._send_lock:
            self._health = report
            if self._sock is not None:
                try:
                    self._sock.sendall(report)
                except OSError as exc:  # sent again once reconnected
                    LOG.debug("health report not sent now: %s", exc)

    def run(self) -> None:
        """Serve notices until :meth:`stop`; reconnect (1 s apart) when guestd goes away."""
        while not self._stop.is_set():
            try:
                self._session()
            except OSError as exc:
                LOG.debug("guestd at %s not reachable: %s", self.socket_path, exc)
            self.registered.clear()
            self._stop.wait(1.0)

    def _session(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(self.socket_path)
            with self._send_lock:
                sock.sendall(protocol.encode(protocol.register(self.name, self.events)))
                if self._health is not None:
                    sock.sendall(self._health)
                self._sock = sock
            decoder = protocol.FrameDecoder()
            while not self._stop.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                for message in decoder.feed(data):
                    if isinstance(message, protocol.ProtocolError):
                        LOG.warning("bad frame from guestd: %s", message)
                    elif message.get("type") == protocol.REGISTERED:
                        self.registered.set()
                    elif message.get("type") == protocol.NOTICE:
                        # One thread per notice: a slow handler never delays another answer.
                        threading.Thread(target=self._answer, args=(sock, message),
                                         daemon=True).start()
                    elif message.get("type") == protocol.FAILURE:
                        LOG.warning("guestd: %s", message.get("message"))

    def _answer(self, sock: socket.socket, message: dict) -> None:
        try:
            notice = Notice(**{k: message[k] for k in (
                "id", "instance", "event", "phase", "timeout", "details")})
        except KeyError as exc:
            LOG.warning("notice without %s", exc)
            return
        try:
            if notice.phase == protocol.VOTE:
                vote = self.on_vote(notice)
                reply = protocol.ballot(notice.id, protocol.ACCEPT if vote.accepted
                                        else protocol.REJECT, vote.reason)
            else:
                self.on_notice(notice)
                reply = protocol.done(notice.id)
        except Exception:
            LOG.exception("handler for %s %s failed", notice.event, notice.phase)
            return
        try:
            with self._send_lock:
                sock.sendall(protocol.encode(reply))
        except OSError as exc:
            LOG.warning("could not answer %s: %s", notice.id, exc)

