"""The applications registered with guestd: their connections, the notices they owe an
answer, and their latest health report.

An application stays connected from its ``register`` on; leaving (or registering
again under its name from a new connection) settles every notice it still owed as an
``error`` and takes its health report out of the status file.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from concurrent.futures import Future

from guestd import health, protocol

LOG = logging.getLogger(__name__)


class Application:
    """A registered application: its connection and the notices it owes an answer."""

    def __init__(self, name: str, events: frozenset, sock: socket.socket) -> None:
        self.name = name
        self.events = events
        self.sock = sock
        # notice id -> (its phase, Future of its protocol.voter entry)
        self.pending: dict = {}
        self.health: dict | None = None  # its latest protocol.app_health entry
        self._send_lock = threading.Lock()

    def wants(self, event: str) -> bool:
        return "*" in self.events or event in self.events

    def send(self, message: dict) -> bool:
        try:
            with self._send_lock:
                self.sock.sendall(protocol.encode(message))
            return True
        except OSError:
            return False

    def settle(self, nid: str, vote: str, reason: str = "", offline: tuple = ()) -> None:
        _, future = self.pending.pop(nid, (None, None))
        if future is not None and not future.done():
            future.set_result(protocol.voter(self.name, vote, reason, offline))

    def finish(self, message: dict) -> None:
        """The application's ``done``: its notice counts as accepted, with the vCPUs it
        offers to take offline when that notice is a prepare. A malformed offer is
        dropped, the notice still counted (a bad pick must never stall a scale-down),
        and then raises :class:`protocol.ProtocolError` to tell the application why;
        outside a prepare the offer is not even read."""
        nid = str(message.get("id"))
        if self.pending.get(nid, (None,))[0] != protocol.PREPARE:
            self.settle(nid, protocol.ACCEPT)
            return
        try:
            _, offline = protocol.parse_done(message)
        except protocol.ProtocolError as exc:
            self.settle(nid, protocol.ACCEPT)
            raise protocol.ProtocolError(
                f"done for {nid} counted without its offline list: {exc}") from None
        self.settle(nid, protocol.ACCEPT, offline=offline)

    def drop(self) -> None:
        for nid in list(self.pending):
            self.settle(nid, protocol.ERROR, "disconnected")


class Registry:
    """Who is registered, by name; one lock guards the names and their health reports."""

    def __init__(self) -> None:
        self._apps: dict[str, Application] = {}
        self._lock = threading.Lock()
        self._notices = itertools.count(1)

    def add(self, app: Application) -> None:
        """Register ``app``; one already registered under its name is disconnected."""
        with self._lock:
            previous, self._apps[app.name] = self._apps.get(app.name), app
        if previous is not None:
            LOG.info("application %s registered again; replacing its old connection", app.name)
            previous.drop()
            previous.sock.shutdown(socket.SHUT_RDWR)

    def remove(self, app: Application) -> None:
        """``app`` disconnected: forget it (unless it was replaced) and what it owed."""
        with self._lock:
            if self._apps.get(app.name) is app:
                del self._apps[app.name]
                LOG.info("application %s disconnected%s", app.name,
                         "" if app.health is None or app.health["healthy"]
                         else "; its unhealthy report goes with it")
        app.drop()

    def report(self, app: Application, entry: dict) -> None:
        """Keep ``entry``, ``app``'s :func:`protocol.app_health`, for the status file."""
        with self._lock:
            previous, app.health = app.health, entry
        health.log_change(f"application {app.name}", previous, entry)

    def reports(self) -> list:
        """The latest health report of every application that sent one."""
        with self._lock:
            return [app.health for app in self._apps.values() if app.health is not None]

    def tell(self, name: str, message: dict) -> bool:
        """Send ``message`` to the application registered as ``name``; False if it is gone."""
        with self._lock:
            app = self._apps.get(name)
        return app is not None and app.send(message)

    def tell_all(self, event: str, message: dict) -> list:
        """Send ``message`` to every application registered for ``event``:
        (name, whether it was sent) for each."""
        with self._lock:
            apps = [app for app in self._apps.values() if app.wants(event)]
        return [(app.name, app.send(message)) for app in apps]

    def ask(self, req: dict) -> list:
        """Send ``req``'s notice to every application registered for its event:
        (name, Future of its :func:`protocol.voter` entry) for each."""
        with self._lock:
            apps = [app for app in self._apps.values() if app.wants(req["event"])]
        return [(app.name, self._ask(app, req)) for app in apps]

    def _ask(self, app: Application, req: dict) -> Future:
        nid = f"{req['id']}.{next(self._notices)}"
        answered: Future = Future()
        app.pending[nid] = (req["phase"], answered)
        if not app.send({**protocol.notice(req), "id": nid}):
            app.settle(nid, protocol.ERROR, "disconnected")
        return answered
