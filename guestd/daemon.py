"""The guestd daemon: applications register here and answer the host's requests.

One unix socket serves both kinds of peer; the first message says which:
``register`` (an application, which then stays connected, receives notices and
may report its health) or ``request`` (``guestd-ctl`` relaying one request from
the host, which gets one ``answer``). Every wait is bounded by the request's own
timeout.

The host may also drop a request frame into the spool directory (``<id>.req``,
written with qemu-ga's guest-file-* RPCs, so no process starts in the guest, which
costs ~150 ms under TCG); guestd picks it up as soon as it is closed (inotify; without
it, within :data:`SPOOL_POLL`), answers it exactly as a relayed request and writes the
answer frame to ``<id>.ans``. The
directory is guestd's own, mode 0700: only root (qemu-ga) may put requests there.

Every ``--status-interval`` seconds guestd rewrites its status file: a counter
that proves guestd alive, and the latest health of every connected application
and health hook. The host reads it through qemu-ga without spawning a process.

A thread per connection, no asyncio: guestd runs in every VM, and asyncio
(which pulls in ssl) would cost more memory than all the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from guestd import hooks, inotify, once, protocol, votes

LOG = logging.getLogger("guestd")
DEFAULT_SOCKET = "/run/guestd/guestd.sock"
DEFAULT_HOOKS_DIR = "/etc/guestd/hooks.d"
DEFAULT_HEALTH_DIR = "/etc/guestd/health.d"
DEFAULT_STATUS_FILE = "/run/guestd/status.json"
DEFAULT_STATUS_INTERVAL = 1.0
DEFAULT_SPOOL_DIR = "/run/guestd/spool"
# Without inotify the spool is scanned this often: the latency a spooled request adds.
SPOOL_POLL = 0.01
# With inotify a scan follows every change, and comes at least this often: incomplete
# requests expire and old answers go.
SPOOL_IDLE = 0.5
# A request file still without its final newline after this is garbage.
SPOOL_INCOMPLETE = 5.0
# Answers the host never collected (it cannot delete files) are removed after this,
# by a sweep every SPOOL_SWEEP seconds.
SPOOL_ANSWER_TTL = 600.0
SPOOL_SWEEP = 30.0
DEFAULT_HEALTH_INTERVAL = 5.0
# A health hook's deadline when not given: its interval, at most this.
MAX_HEALTH_TIMEOUT = 10.0
# At most one log line per this many seconds while the status file cannot be written.
STATUS_ERROR_LOG_INTERVAL = 60.0
# Reasons are cut to this when the full status would not fit in one frame (many
# applications with long non-ASCII reasons); 64 entries then always fit.
SHORT_REASON = 64
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


def _log_health(name: str, previous: dict | None, entry: dict) -> None:
    """Log a change of health (or of the action asked for), not every report."""
    if previous is not None and previous["healthy"] == entry["healthy"] and (
            entry["healthy"] or previous["action"] == entry["action"]):
        return
    if entry["healthy"]:
        LOG.info("%s is healthy%s", name, f": {entry['reason']}" if entry["reason"] else "")
    else:
        LOG.warning("%s is unhealthy: %s; action requested: %s", name,
                    entry["reason"] or "no reason given", entry["action"])


def _status_bytes(seq: int, interval: float, entries: list) -> bytes:
    """The status file's contents: unhealthy entries first, so that the cut at
    :data:`protocol.MAX_APPS` never hides one."""
    entries = sorted(entries, key=lambda entry: (entry["healthy"], entry["name"]))
    try:
        return protocol.encode(protocol.status(seq, interval, entries))
    except protocol.ProtocolError:  # over one frame: keep every verdict, cut the reasons
        return protocol.encode(protocol.status(seq, interval, [
            {**entry, "reason": entry["reason"][:SHORT_REASON]} for entry in entries]))


class Guestd:
    def __init__(self, socket_path: str, hooks_dir: str | None, status_file: str | None = None,
                 status_interval: float = DEFAULT_STATUS_INTERVAL, health_dir: str | None = None,
                 health_interval: float = DEFAULT_HEALTH_INTERVAL,
                 health_timeout: float | None = None, spool_dir: str | None = None) -> None:
        """``status_file`` None: no status file (and so no health hooks either);
        ``spool_dir`` None: no spool, requests come through the socket only."""
        self.socket_path = socket_path
        self.hooks_dir = hooks_dir
        self.status_file = status_file
        self.status_interval = status_interval
        self.health_dir = health_dir
        self.health_interval = health_interval
        self.health_timeout = health_timeout or min(health_interval, MAX_HEALTH_TIMEOUT)
        self.spool_dir = spool_dir
        self.apps: dict = {}
        self.hook_health: dict = {}  # "hook:<file name>" -> its latest protocol.app_health
        self._apps_lock = threading.Lock()  # guards apps, their health and hook_health
        self._ids = itertools.count(1)
        self._once = once.AtMostOnce()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._seq = 0
        self._status_failures = 0
        self._status_log_after = 0.0

    def serve(self, ready: threading.Event | None = None) -> None:
        if self.status_file:
            self._seq = _previous_seq(self.status_file)
            self._write_status()
            threading.Thread(target=self._status_beat, name="status", daemon=True).start()
            threading.Thread(target=self._health_hooks, name="health", daemon=True).start()
            LOG.info("status every %gs in %s; health hooks in %s every %gs (deadline %gs)",
                     self.status_interval, self.status_file, self.health_dir,
                     self.health_interval, self.health_timeout)
        if self.spool_dir:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            os.chmod(self.spool_dir, 0o700)  # whatever the umask, or whoever made it before
            threading.Thread(target=self._spool, args=(self._watch_spool(),), name="spool",
                             daemon=True).start()
        # The socket last: whoever waits for it finds the status file and the spool.
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o666)
        listener.listen(64)
        LOG.info("guestd listening on %s, hooks in %s", self.socket_path, self.hooks_dir)
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
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    def _status_beat(self) -> None:
        while not self._stopping.wait(self.status_interval):
            self._write_status()

    def _write_status(self) -> None:
        with self._apps_lock:
            entries = [app.health for app in self.apps.values() if app.health is not None]
            entries += self.hook_health.values()
        directory = os.path.dirname(self.status_file) or "."
        temporary = os.path.join(directory,
                                 f".{os.path.basename(self.status_file)}.{os.getpid()}.tmp")
        try:
            data = _status_bytes(self._seq + 1, self.status_interval, entries)
            os.makedirs(directory, exist_ok=True)
            # O_EXCL and O_NOFOLLOW: never write through a link someone left in our place.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with open(fd, "wb") as f:
                os.fchmod(fd, 0o644)  # whatever the umask
                f.write(data)
            os.replace(temporary, self.status_file)
        except (OSError, ValueError) as exc:  # whatever it is, the beat goes on
            try:
                os.unlink(temporary)
            except OSError:
                pass
            self._status_failures += 1
            if time.monotonic() >= self._status_log_after:
                LOG.error("cannot write the status file %s: %s (%d failed writes; next report "
                          "in %gs at the latest)", self.status_file, exc, self._status_failures,
                          STATUS_ERROR_LOG_INTERVAL)
                self._status_log_after = time.monotonic() + STATUS_ERROR_LOG_INTERVAL
            return
        self._seq += 1
        if self._status_failures:
            LOG.info("status file %s written again after %d failed writes", self.status_file,
                     self._status_failures)
            self._status_failures, self._status_log_after = 0, 0.0

    def _health_hooks(self) -> None:
        """Run the health hooks one at a time, a round every interval (or at once after
        a round that took longer), until stopped."""
        while True:
            started = time.monotonic()
            paths = hooks.discover(self.health_dir)
            names = {f"hook:{os.path.basename(path)}" for path in paths}
            with self._apps_lock:
                gone = [name for name in self.hook_health if name not in names]
                for name in gone:
                    del self.hook_health[name]
            for name in gone:
                LOG.info("health hook %s removed", name)
            for path in paths:
                if self._stopping.is_set():
                    return
                name = f"hook:{os.path.basename(path)}"
                entry = protocol.app_health(name, *hooks.check(path, self.health_timeout))
                with self._apps_lock:
                    previous, self.hook_health[name] = self.hook_health.get(name), entry
                _log_health(name, previous, entry)
            if self._stopping.wait(max(started + self.health_interval - time.monotonic(), 0)):
                return

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
                        LOG.info("application %s disconnected%s", app.name,
                                 "" if app.health is None or app.health["healthy"]
                                 else "; its unhealthy report goes with it")
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
            elif kind == protocol.HEALTH:
                entry = protocol.app_health(app.name, *protocol.parse_health(message))
                with self._apps_lock:
                    previous, app.health = app.health, entry
                _log_health(f"application {app.name}", previous, entry)
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

    def _watch_spool(self) -> inotify.DirectoryWatch | None:
        try:
            watch = inotify.DirectoryWatch(self.spool_dir)
        except inotify.Unavailable as exc:
            LOG.info("spool in %s, scanned every %gs (%s)", self.spool_dir, SPOOL_POLL, exc)
            return None
        LOG.info("spool in %s, watched with inotify", self.spool_dir)
        return watch

    def _spool(self, watch: inotify.DirectoryWatch | None) -> None:
        """Scan the spool until stopped: take complete requests, drop garbage, expire
        old answers. Never raises: whatever a file holds, guestd goes on."""
        pending: dict = {}  # incomplete request file -> when first seen
        stuck: set = set()  # garbage that could not be removed: not reported again
        sweep_after = 0.0
        while not self._stopping.is_set():
            if watch is not None and not watch.alive:
                LOG.warning("spool: the inotify watch on %s is gone; scanning every %gs",
                            self.spool_dir, SPOOL_POLL)
                watch.close()
                watch = None
            if watch is not None:
                watch.wait(SPOOL_IDLE)
            elif self._stopping.wait(SPOOL_POLL):
                break
            try:
                with os.scandir(self.spool_dir) as entries:
                    names = [entry.name for entry in entries
                             if entry.name.endswith(protocol.REQ_SUFFIX)]
                for name in names:
                    if name not in stuck:
                        self._take(name, pending, stuck)
                pending = {name: seen for name, seen in pending.items() if name in names}
                stuck.intersection_update(names)
                if time.monotonic() >= sweep_after:
                    self._sweep_answers()
                    sweep_after = time.monotonic() + SPOOL_SWEEP
            except Exception:  # the spool must never take guestd down
                LOG.exception("spool scan of %s failed", self.spool_dir)
                self._stopping.wait(1.0)
        if watch is not None:
            watch.close()

    def _take(self, name: str, pending: dict, stuck: set) -> None:
        """One ``.req`` file: handled in the background once complete, else left or dropped."""
        path = os.path.join(self.spool_dir, name)
        rid = name[:-len(protocol.REQ_SUFFIX)]
        try:
            protocol.spool_name(rid)
            # O_NONBLOCK: a FIFO someone left there must not block the scan.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise protocol.ProtocolError("not a regular file")
                data = f.read(protocol.MAX_FRAME + 1)
        except FileNotFoundError:
            return
        except (OSError, protocol.ProtocolError) as exc:
            self._discard(path, str(exc), stuck)
            return
        if len(data) > protocol.MAX_FRAME:
            self._discard(path, f"over {protocol.MAX_FRAME} bytes", stuck)
            return
        if not data.endswith(b"\n"):
            seen = pending.setdefault(name, time.monotonic())
            if time.monotonic() - seen > SPOOL_INCOMPLETE:
                self._discard(path, f"still incomplete after {SPOOL_INCOMPLETE:g}s", stuck)
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            LOG.warning("spool: cannot remove %s (%s); left alone", name, exc)
            stuck.add(name)
            return
        threading.Thread(target=self._answer_spooled, args=(rid, data), daemon=True).start()

    def _answer_spooled(self, rid: str, data: bytes) -> None:
        """Answer a spooled request as a relayed one is answered, into ``<rid>.ans``."""
        try:
            req = protocol.parse_request(protocol.decode(data))
            if req["id"] != rid:
                raise protocol.ProtocolError(f"request id {req['id']!r} in {rid}"
                                             f"{protocol.REQ_SUFFIX}")
        except protocol.ProtocolError as exc:
            LOG.warning("spool: bad request %s: %s", rid, exc)
            answer = protocol.failure(str(exc))
        else:
            LOG.debug("spool: request %s (%s %s)", rid, req["event"], req["phase"])
            answer = self.handle(req)
        path = os.path.join(self.spool_dir, rid + protocol.ANS_SUFFIX)
        temporary = os.path.join(self.spool_dir, f".{rid}.{next(self._ids)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "wb") as f:
                f.write(protocol.encode(answer))
            os.replace(temporary, path)
        except OSError as exc:
            LOG.error("spool: cannot write the answer to %s: %s", rid, exc)
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def _discard(self, path: str, why: str, stuck: set) -> None:
        LOG.warning("spool: dropped %s: %s", os.path.basename(path), why)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            LOG.warning("spool: cannot remove %s (%s); left alone", os.path.basename(path), exc)
            stuck.add(os.path.basename(path))

    def _sweep_answers(self) -> None:
        """Remove answers (and temporary files of a crash) older than SPOOL_ANSWER_TTL."""
        expired = time.time() - SPOOL_ANSWER_TTL
        old = 0
        with os.scandir(self.spool_dir) as entries:
            for entry in entries:
                if entry.name.endswith((protocol.ANS_SUFFIX, ".tmp")):
                    # Suppressed: a temporary file may be renamed under our feet.
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < expired:
                            os.unlink(entry.path)
                            old += 1
        if old:
            LOG.info("spool: removed %d answers older than %gs", old, SPOOL_ANSWER_TTL)

    def handle(self, req: dict) -> dict:
        """The answer to ``req``; its applications and hooks hear it once, however often
        the host delivers it (a repeat gets the first answer)."""
        return self._once.answer(req, self._deliver, max(req["timeout"] - REPLY_MARGIN, 0.05))

    def _deliver(self, req: dict) -> dict:
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
        # Tallied over all; the answer lists those that decided first, as many as it may.
        return protocol.answer(req, result, votes.ranked(voters, req["silence"]))

    def _ask(self, app: Application, req: dict) -> Future:
        """Send the notice; a future of the application's voter entry."""
        nid = f"{req['id']}.{next(self._ids)}"
        answered: Future = Future()
        app.pending[nid] = answered
        if not app.send({**protocol.notice(req), "id": nid}):
            app.settle(nid, protocol.ERROR, "disconnected")
        return answered


def _previous_seq(path: str) -> int:
    """The seq of the status file a previous guestd left, so that a restarted guestd
    carries on counting and never looks to the host as if it went backwards."""
    try:
        with open(path, "rb") as f:
            return protocol.parse_status(f.read(protocol.MAX_FRAME + 1))["seq"]
    except (OSError, protocol.ProtocolError):
        return 0


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


def _seconds(value: str) -> float:
    """An interval or deadline option: the status file's own rule, (0, 3600]."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds in (0, 3600]")
    return seconds


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestd", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default=os.environ.get("GUESTD_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR,
                        help="vote and notice hooks (default %(default)s)")
    parser.add_argument("--status-file", default=DEFAULT_STATUS_FILE,
                        help="rewritten every --status-interval for the host to read "
                             "(default %(default)s)")
    parser.add_argument("--status-interval", type=_seconds, default=DEFAULT_STATUS_INTERVAL,
                        metavar="SECONDS", help="default %(default)s")
    parser.add_argument("--health-dir", default=DEFAULT_HEALTH_DIR,
                        help="health hooks (default %(default)s)")
    parser.add_argument("--health-interval", type=_seconds, default=DEFAULT_HEALTH_INTERVAL,
                        metavar="SECONDS", help="default %(default)s")
    parser.add_argument("--health-timeout", type=_seconds, metavar="SECONDS",
                        help=f"a health hook's deadline (default: its interval, at most "
                             f"{MAX_HEALTH_TIMEOUT:g})")
    parser.add_argument("--spool-dir", default=DEFAULT_SPOOL_DIR,
                        help="where the host drops requests through qemu-ga's file RPCs "
                             "(default %(default)s; empty: none)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s guestd %(levelname)s %(message)s")
    daemon = Guestd(args.socket, args.hooks_dir, args.status_file, args.status_interval,
                    args.health_dir, args.health_interval, args.health_timeout,
                    args.spool_dir or None)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    try:
        daemon.serve()
    except KeyboardInterrupt:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
