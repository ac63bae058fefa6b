"""The guestd daemon: applications register here and answer the host's requests.

One unix socket serves both kinds of peer; the first message says which:
``register`` (an application, which then stays connected and receives notices)
or ``request`` (``guestd-ctl`` relaying one request from the host, which gets
one ``answer``). Every wait is bounded by the request's own timeout.

A thread per connection, no asyncio: guestd runs in every VM, and asyncio
(which pulls in ssl) would cost more memory than all the rest.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from guestd import hooks, protocol, votes

LOG = logging.getLogger("guestd")
DEFAULT_SOCKET = "/run/guestd/guestd.sock"
DEFAULT_HOOKS_DIR = "/etc/guestd/hooks.d"
# Time kept back from a request's timeout to carry the answer out of the guest.
REPLY_MARGIN = 0.1
# How long a new connection may take to say what it is.
FIRST_MESSAGE_TIMEOUT = 10.0


class Application:
    """A registered application: its connection and the notices it owes an answer."""

    def __init__(self, name: str, events: frozenset, sock: socket.socket) -> None:
        self.name = name
        self.events = events
        self.sock = sock
        self.pending: dict = {}  # notice id -> Future of its protocol.voter entry
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

    def settle(self, nid: str, vote: str, reason: str = "") -> None:
        future = self.pending.pop(nid, None)
        if future is not None and not future.done():
            future.set_result(protocol.voter(self.name, vote, reason))

    def drop(self) -> None:
        for nid in list(self.pending):
            self.settle(nid, protocol.ERROR, "disconnected")


def _background(fn, *args) -> Future:
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits for it
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


class Guestd:
    def __init__(self, socket_path: str, hooks_dir: str | None) -> None:
        self.socket_path = socket_path
        self.hooks_dir = hooks_dir
        self.apps: dict = {}
        self._apps_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None

    def serve(self, ready: threading.Event | None = None) -> None:
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o666)
        listener.listen(64)
        LOG.info("guestd listening on %s, hooks in %s", self.socket_path, self.hooks_dir)
        if ready is not None:
            ready.set()
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()

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
                with self._apps_lock:
                    if self.apps.get(app.name) is app:
                        del self.apps[app.name]
                        LOG.info("application %s disconnected", app.name)
                app.drop()
            conn.close()

    def _register(self, message: dict, conn: socket.socket) -> Application | None:
        try:
            name, events = protocol.parse_register(message)
        except protocol.ProtocolError as exc:
            conn.sendall(protocol.encode(protocol.failure(str(exc))))
            return None
        app = Application(name, events, conn)
        with self._apps_lock:
            previous, self.apps[name] = self.apps.get(name), app
        if previous is not None:
            LOG.info("application %s registered again; replacing its old connection", name)
            previous.drop()
            previous.sock.shutdown(socket.SHUT_RDWR)
        app.send({"v": protocol.VERSION, "type": protocol.REGISTERED, "name": name})
        LOG.info("application %s registered for %s", name, ", ".join(sorted(events)))
        return app

    def _from_app(self, app: Application, message: dict) -> None:
        kind = message.get("type")
        try:
            if kind == protocol.BALLOT:
                app.settle(*protocol.parse_ballot(message))
            elif kind == protocol.DONE:
                app.settle(str(message.get("id")), protocol.ACCEPT)
            else:
                raise protocol.ProtocolError(f"unexpected {kind!r} from an application")
        except protocol.ProtocolError as exc:
            LOG.warning("application %s: %s", app.name, exc)
            app.send(protocol.failure(str(exc)))

    def _relay(self, message: dict, conn: socket.socket) -> dict:
        if not _peer_may_request(conn):
            LOG.warning("refused a host request from an unprivileged local peer")
            return protocol.failure("requests are for root only")
        try:
            return self.handle(protocol.parse_request(message))
        except protocol.ProtocolError as exc:
            return protocol.failure(str(exc))

    def handle(self, req: dict) -> dict:
        """Hand ``req`` to every interested application and hook; return the answer."""
        budget = max(req["timeout"] - REPLY_MARGIN, 0.05)
        deadline = time.monotonic() + budget
        with self._apps_lock:
            apps = [app for app in self.apps.values() if app.wants(req["event"])]
        asked = [(app.name, self._ask(app, req)) for app in apps]
        asked += [(os.path.basename(path), _background(hooks.run, path, req, budget))
                  for path in hooks.discover(self.hooks_dir)]
        voters = []
        for name, future in asked:
            try:
                outcome = future.result(timeout=max(deadline - time.monotonic(), 0))
            except FutureTimeout:
                LOG.warning("application %s missed its %.1fs deadline for %s %s", name, budget,
                            req["event"], req["phase"])
                outcome = protocol.voter(name, protocol.TIMEOUT)
            voters.append(outcome)
        if req["phase"] == protocol.VOTE:
            result = votes.tally(voters, req["silence"])
            LOG.info("vote on %s for %s: %s (%s)", req["event"], req["instance"], result,
                     "; ".join(f"{v['name']}={v['vote']}" for v in voters) or "nobody asked")
        else:
            result = protocol.ACCEPT
            LOG.info("%s notice of %s for %s delivered to %d", req["phase"], req["event"],
                     req["instance"], len(voters))
        return protocol.answer(req, result, voters)

    def _ask(self, app: Application, req: dict) -> Future:
        """Send the notice; a future of the application's voter entry."""
        nid = f"{req['id']}.{next(self._ids)}"
        answered: Future = Future()
        app.pending[nid] = answered
        if not app.send({**protocol.notice(req), "id": nid}):
            app.settle(nid, protocol.ERROR, "disconnected")
        return answered


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


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestd", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=os.environ.get("GUESTD_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s guestd %(levelname)s %(message)s")
    daemon = Guestd(args.socket, args.hooks_dir)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    try:
        daemon.serve()
    except KeyboardInterrupt:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
