"""guestd's unix socket, which serves both kinds of peer; the first message says which.

``register``: an application, which then stays connected, receives notices, answers
them, may report its health (:mod:`guestd.registry` keeps it) and queue group messages
in the outbox (:mod:`guestd.outbox`). ``request``:
``guestd-ctl`` relaying one request from the host, which gets one ``answer`` from
``handle``. A thread per connection, no asyncio: guestd runs in every VM, and asyncio
(which pulls in ssl) would cost more memory than all the rest.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Callable

from guestd import group_protocol as gp
from guestd import protocol
from guestd.outbox import Outbox
from guestd.registry import Application, Registry

LOG = logging.getLogger(__name__)
# How long a new connection may take to say what it is.
FIRST_MESSAGE_TIMEOUT = 10.0


class Server:
    """The socket at ``path``: applications join ``registry`` and queue group messages in
    ``outbox`` (None: refused as ``disabled``), requests go to ``handle``."""

    def __init__(self, path: str, registry: Registry, handle: Callable[[dict], dict],
                 outbox: Outbox | None) -> None:
        self.path = path
        self._registry = registry
        self._handle = handle
        self._outbox = outbox
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    def serve(self, ready: threading.Event | None = None) -> None:
        """Listen (``ready`` is set then), and serve until :meth:`stop`."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener = self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o666)
        listener.listen(64)
        LOG.info("guestd listening on %s", self.path)
        if self._stopping.is_set():  # stopped while starting: stop() saw no listener
            listener.close()
        if ready is not None:
            ready.set()
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        """Stop serving; the socket goes with it, so that guestd-ctl tells a guestd
        stopped on purpose (no socket: the guest does not negotiate) from one that
        crashed (its socket left behind: the guest cannot be asked)."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _connection(self, conn: socket.socket) -> None:
        decoder = protocol.FrameDecoder()
        app = None
        conn.settimeout(FIRST_MESSAGE_TIMEOUT)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for message in decoder.feed(data):
                    if isinstance(message, protocol.ProtocolError):
                        LOG.warning("bad frame from %s: %s", app.name if app else "peer", message)
                        conn.sendall(protocol.encode(protocol.failure(str(message))))
                    elif app is not None:
                        self._from_app(app, message)
                    elif message.get("type") == protocol.REGISTER:
                        app = self._register(message, conn)
                        conn.settimeout(None)  # applications stay connected
                    elif message.get("type") == protocol.REQUEST:
                        conn.sendall(protocol.encode(self._relay(message, conn)))
                        return
                    else:
                        conn.sendall(protocol.encode(protocol.failure(
                            "first message must be register or request")))
        except OSError:
            pass
        finally:
            if app is not None:
                self._registry.remove(app)
            conn.close()

    def _register(self, message: dict, conn: socket.socket) -> Application | None:
        try:
            name, events = protocol.parse_register(message)
        except protocol.ProtocolError as exc:
            conn.sendall(protocol.encode(protocol.failure(str(exc))))
            return None
        app = Application(name, events, conn)
        self._registry.add(app)
        app.send({"v": protocol.VERSION, "type": protocol.REGISTERED, "name": name})
        LOG.info("application %s registered for %s", name, ", ".join(sorted(events)))
        return app

    def _from_app(self, app: Application, message: dict) -> None:
        kind = message.get("type")
        try:
            if kind == protocol.BALLOT:
                app.settle(*protocol.parse_ballot(message))
            elif kind == protocol.DONE:
                app.finish(message)
            elif kind == protocol.HEALTH:
                self._registry.report(
                    app, protocol.app_health(app.name, *protocol.parse_health(message)))
            elif kind in (gp.GROUP_SEND, gp.GROUP_STATUS):
                self._queue(app, message)
            else:
                raise protocol.ProtocolError(f"unexpected {kind!r} from an application")
        except protocol.ProtocolError as exc:
            LOG.warning("application %s: %s", app.name, exc)
            app.send(protocol.failure(str(exc)))

    def _queue(self, app: Application, message: dict) -> None:
        """A group-send or group-status into the outbox: group-queued, or an error with
        the reason (the ``ref`` echoed either way)."""
        ref = gp.parse_ref(message)
        try:
            if self._outbox is None:
                raise gp.Refused(gp.DISABLED, "this guestd keeps no outbox")
            if message.get("type") == gp.GROUP_STATUS:
                seq = self._outbox.status(app.name)
            else:
                seq = self._outbox.send(app.name, *gp.parse_group_send(message))
        except gp.Refused as exc:
            LOG.info("application %s: group message refused: %s", app.name, exc)
            app.send(gp.group_refused(exc.reason, str(exc), ref))
        except protocol.ProtocolError as exc:
            LOG.warning("application %s: %s", app.name, exc)
            app.send(gp.group_refused(gp.INVALID, str(exc), ref))
        else:
            app.send(gp.group_queued(seq, ref))

    def _relay(self, message: dict, conn: socket.socket) -> dict:
        if not _peer_may_request(conn):
            LOG.warning("refused a host request from an unprivileged local peer")
            return protocol.failure("requests are for root only")
        try:
            return self._handle(protocol.parse_request(message))
        except protocol.ProtocolError as exc:
            return protocol.failure(str(exc))


def _peer_may_request(conn: socket.socket) -> bool:
    """Only root (qemu-ga's guestd-ctl) or guestd's own user may relay host requests.

    Otherwise any local user could forge notices to the applications.
    """
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return True  # no peer credentials on this platform: the socket mode guards it
    _, uid, _ = struct.unpack("3i", creds)
    return uid in (0, os.getuid())
