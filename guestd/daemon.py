"""The guestd daemon: applications register here and answer the host's requests.

One unix socket serves both kinds of peer; the first message says which:
``register`` (an application, which then stays connected and receives notices)
or ``request`` (``guestd-ctl`` relaying one request from the host, which gets
one ``answer``). Every wait is bounded by the request's own timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import socket
import struct
import sys

from guestd import hooks, protocol, votes

LOG = logging.getLogger("guestd")
DEFAULT_SOCKET = "/run/guestd/guestd.sock"
DEFAULT_HOOKS_DIR = "/etc/guestd/hooks.d"
# Time kept back from a request's timeout to carry the answer out of the guest.
REPLY_MARGIN = 0.1


class Application:
    """A registered application: its connection and the notices it owes an answer."""

    def __init__(self, name: str, events: frozenset, writer: asyncio.StreamWriter) -> None:
        self.name = name
        self.events = events
        self.writer = writer
        self.pending: dict = {}  # notice id -> future of (vote, reason)

    def wants(self, event: str) -> bool:
        return "*" in self.events or event in self.events

    def settle(self, nid: str, outcome: tuple) -> None:
        future = self.pending.pop(nid, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    def drop(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_result((protocol.ERROR, "disconnected"))
        self.pending.clear()


class Guestd:
    def __init__(self, socket_path: str, hooks_dir: str | None) -> None:
        self.socket_path = socket_path
        self.hooks_dir = hooks_dir
        self.apps: dict = {}
        self._ids = itertools.count(1)

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        server = await asyncio.start_unix_server(self._connection, path=self.socket_path,
                                                 limit=protocol.MAX_FRAME)
        os.chmod(self.socket_path, 0o666)
        LOG.info("guestd listening on %s, hooks in %s", self.socket_path, self.hooks_dir)
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        decoder = protocol.FrameDecoder()
        app = None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for message in decoder.feed(data):
                    if isinstance(message, protocol.ProtocolError):
                        LOG.warning("bad frame from %s: %s", app.name if app else "peer", message)
                        writer.write(protocol.encode(protocol.failure(str(message))))
                        continue
                    if app is not None:
                        self._from_app(app, message)
                    elif message.get("type") == protocol.REGISTER:
                        app = self._register(message, writer)
                    elif message.get("type") == protocol.REQUEST:
                        await self._relay(message, writer)
                        return
                    else:
                        writer.write(protocol.encode(protocol.failure(
                            "first message must be register or request")))
        except (ConnectionError, OSError):
            pass
        finally:
            if app is not None and self.apps.get(app.name) is app:
                del self.apps[app.name]
                LOG.info("application %s disconnected", app.name)
            if app is not None:
                app.drop()
            writer.close()

    def _register(self, message: dict, writer: asyncio.StreamWriter) -> Application | None:
        try:
            name, events = protocol.parse_register(message)
        except protocol.ProtocolError as exc:
            writer.write(protocol.encode(protocol.failure(str(exc))))
            return None
        previous = self.apps.get(name)
        if previous is not None:
            LOG.info("application %s registered again; replacing its old connection", name)
            previous.drop()
            previous.writer.close()
        app = self.apps[name] = Application(name, events, writer)
        writer.write(protocol.encode({"v": protocol.VERSION, "type": protocol.REGISTERED,
                                      "name": name}))
        LOG.info("application %s registered for %s", name, ", ".join(sorted(events)))
        return app

    def _from_app(self, app: Application, message: dict) -> None:
        kind = message.get("type")
        try:
            if kind == protocol.BALLOT:
                nid, vote, reason = protocol.parse_ballot(message)
                app.settle(nid, (vote, reason))
            elif kind == protocol.DONE:
                app.settle(str(message.get("id")), (protocol.ACCEPT, ""))
            else:
                raise protocol.ProtocolError(f"unexpected {kind!r} from an application")
        except protocol.ProtocolError as exc:
            LOG.warning("application %s: %s", app.name, exc)
            app.writer.write(protocol.encode(protocol.failure(str(exc))))

    async def _relay(self, message: dict, writer: asyncio.StreamWriter) -> None:
        if not _peer_may_request(writer):
            writer.write(protocol.encode(protocol.failure("requests are for root only")))
            return
        try:
            req = protocol.parse_request(message)
        except protocol.ProtocolError as exc:
            writer.write(protocol.encode(protocol.failure(str(exc))))
            return
        writer.write(protocol.encode(await self.handle(req)))
        await writer.drain()

    async def handle(self, req: dict) -> dict:
        """Hand ``req`` to every interested application and hook; return the answer."""
        budget = max(req["timeout"] - REPLY_MARGIN, 0.05)
        waits = [self._ask(app, req, budget) for app in list(self.apps.values())
                 if app.wants(req["event"])]
        waits += [hooks.run(path, req, budget) for path in hooks.discover(self.hooks_dir)]
        voters = list(await asyncio.gather(*waits))
        if req["phase"] == protocol.VOTE:
            result = votes.tally(voters, req["silence"])
            LOG.info("vote on %s for %s: %s (%s)", req["event"], req["instance"], result,
                     "; ".join(f"{v['name']}={v['vote']}" for v in voters) or "nobody asked")
        else:
            result = protocol.ACCEPT
            LOG.info("%s notice of %s for %s delivered to %d", req["phase"], req["event"],
                     req["instance"], len(voters))
        return protocol.answer(req, result, voters)

    async def _ask(self, app: Application, req: dict, budget: float) -> dict:
        nid = f"{req['id']}.{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        app.pending[nid] = future
        app.writer.write(protocol.encode({**protocol.notice(req), "id": nid}))
        try:
            vote, reason = await asyncio.wait_for(future, budget)
        except asyncio.TimeoutError:
            app.pending.pop(nid, None)
            LOG.warning("application %s missed its %.1fs deadline for %s %s", app.name,
                        budget, req["event"], req["phase"])
            vote, reason = protocol.TIMEOUT, ""
        return protocol.voter(app.name, vote, reason)


def _peer_may_request(writer: asyncio.StreamWriter) -> bool:
    """Only root (qemu-ga's guestd-ctl) or guestd's own user may relay host requests.

    Otherwise any local user could forge notices to the applications.
    """
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
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
    try:
        asyncio.run(Guestd(args.socket, args.hooks_dir).serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
