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

vCPU scaling: the host takes vCPUs offline (``scale-down``) or brings them back
(``scale-up``), with the usual phases. The notices' details say which vCPUs are online
(``notice.online``), how many are to stay (``notice.target``) and the host's own pick
(``notice.offline``); at the end, which are online now and which went (``offline``) or
came back (``added``). A handler answers a scale-down's prepare with the vCPUs it would
rather give up, by returning :class:`Offline`::

    def notice(notice):
        if notice.event == "scale-down" and notice.phase == "prepare":
            return Offline(idle_first(notice.online)[:len(notice.online) - notice.target])
        if notice.phase == "end":
            resize_worker_pool(len(notice.online))

    Application("db", events=["scale-down", "scale-up"], on_notice=notice).run()

The host skips CPU 0 and any pick that is not online, and takes the highest online vCPUs
for the rest. A malformed offer (more than 16, or not vCPU numbers) is logged and left
out, and the prepare still answered: a bad pick never holds up a scale-down.

An application reports its health whenever it changes (from any thread)::

    app = Application("db").start()
    app.report_health(False, "replica lost its primary", action="reboot")

guestd publishes the latest report to the host until the application reports
again or disconnects; the client re-sends it after reconnecting.

Server-group messaging: the other members of this VM's Nova server group (each
application registered for the ``group`` event, which ``on_message`` adds)::

    app = Application("db", on_message=lambda m: print(m.sender, m.body),
                      on_result=lambda r: r.status == "refused" and print(r.reason)).start()
    seq = app.broadcast({"role": "active"})   # or app.send(member_uuid, body)

``on_peer`` gets each other member's latest state as a :class:`PeerNotice`
(``failed``, ``reboot prepared``, ``unreachable``...); it also registers for ``group``.

``broadcast``, ``send`` and ``group_status`` return the entry's seq once guestd has
queued it, or raise :class:`GroupError` when guestd refuses it (``too-large``,
``outbox-full``) or cannot be reached; the host's verdict on each (accepted for whom,
or refused and why; the group status) comes later to ``on_result``, and for an
accepted message a final result too (``delivered`` to all, or ``expired``). Callbacks run one
at a time in one thread of their own, in the order guestd handed them over.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from guestd import group_protocol as gp
from guestd import protocol
from guestd.peer_protocol import PEER_NOTICE, PeerNotice

LOG = logging.getLogger(__name__)
# How long guestd may take to say whether it queued a group message.
QUEUE_TIMEOUT = 5.0
NOT_CONNECTED, NO_ANSWER = "not-connected", "no-answer"


@dataclass(frozen=True)
class Notice:
    """One phase of one lifecycle operation, as the application sees it."""

    id: str
    instance: str
    event: str
    phase: str
    timeout: float
    details: dict = field(default_factory=dict)

    # Readers of a scale-down's or scale-up's details; empty (None) in other notices.
    @property
    def online(self) -> tuple:
        """The vCPUs online: now in a vote or a prepare, after the change in an end."""
        return _cpus(self.details.get("online"))

    @property
    def target(self) -> int | None:
        """How many vCPUs are to stay online (vote and prepare)."""
        target = self.details.get("target")
        return target if isinstance(target, int) and not isinstance(target, bool) else None

    @property
    def offline(self) -> tuple:
        """A scale-down's vCPUs to go offline: the host's default pick in a vote or a
        prepare, those that went in an end."""
        return _cpus(self.details.get("offline"))

    @property
    def added(self) -> tuple:
        """The vCPUs a scale-up brought online (end)."""
        return _cpus(self.details.get("added"))


def _cpus(value: object) -> tuple:
    if isinstance(value, list) and all(
            isinstance(cpu, int) and not isinstance(cpu, bool) for cpu in value):
        return tuple(value)
    return ()


@dataclass(frozen=True)
class Offline:
    """What an ``on_notice`` handler returns to a scale-down's prepare: the vCPUs (an
    iterable of numbers) this application offers to take offline, those it prefers
    first, at most 16. Ignored in any other notice."""

    cpus: Iterable[int]


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


@dataclass(frozen=True)
class GroupMessage:
    """A message from another member of this VM's server group (``sender``, its Nova
    UUID, as the host read it from that VM's channel)."""

    id: str
    sender: str
    group: str
    to: str
    seq: int
    body: object
    sent_at: float

    @classmethod
    def of(cls, message: dict) -> GroupMessage:
        return cls(message["id"], message["from"], message["group"], message["to"],
                   message["seq"], message["body"], message["sent_at"])


@dataclass(frozen=True)
class GroupResult:
    """The host's verdict on one entry this application queued (its ``seq``):
    ``accepted`` with the ``message`` id and each member's delivery (``pending``), or the
    ``group`` status asked for; or ``refused`` with a ``reason``. An accepted message with
    recipients gets a second, final result: ``delivered`` once every recipient had it,
    or ``expired`` (with a ``reason``) when some did not before its TTL; ``members`` then
    says who had it (``delivered``) and who did not (``expired``)."""

    seq: int
    status: str
    reason: str = ""
    message: str | None = None
    members: dict = field(default_factory=dict)
    group: dict | None = None

    @classmethod
    def of(cls, message: dict) -> GroupResult:
        return cls(message["seq"], message["status"], message.get("reason") or "",
                   message.get("message"), message.get("members") or {},
                   message.get("group"))


class GroupError(Exception):
    """guestd did not queue a group message; ``reason`` says why (``too-large``,
    ``outbox-full``, ``invalid``, ``disabled``, ``not-connected``, ``no-answer``)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


class Application:
    def __init__(self, name: str, events=("*",), on_vote=None, on_notice=None,
                 socket_path: str | None = None, on_message=None, on_result=None,
                 on_peer=None) -> None:
        self.name = name
        self.events = list(events)
        wants_group = on_message is not None or on_peer is not None
        if wants_group and not {"*", protocol.GROUP} & set(self.events):
            self.events.append(protocol.GROUP)
        self.on_vote = on_vote or (lambda notice: Vote.accept())
        self.on_notice = on_notice or (lambda notice: None)
        self.on_message = on_message or (lambda message: None)
        self.on_result = on_result or (lambda result: None)
        self.on_peer = on_peer or (lambda notice: None)
        self.socket_path = socket_path or os.environ.get("GUESTD_SOCKET", protocol.DEFAULT_SOCKET)
        self.registered = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        # Answers and health reports come from several threads; it also keeps a
        # report from slipping in between a new connection and its register.
        self._send_lock = threading.Lock()
        self._health: bytes | None = None  # the latest report, re-sent on every connection
        self._refs = itertools.count(1)
        self._queued: dict = {}  # ref -> Future of guestd's group-queued or error
        self._callbacks: queue.Queue = queue.Queue()  # (handler, argument), None to end

    def start(self) -> Application:
        threading.Thread(target=self.run, name=f"guestd-app-{self.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._callbacks.put(None)
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

    def broadcast(self, body: object) -> int:
        """Queue ``body`` (any JSON value) for every other member of the group; its seq."""
        return self._queue(gp.group_send(gp.BROADCAST, body))

    def send(self, member: str, body: object) -> int:
        """Queue ``body`` for one member (its Nova UUID); its seq."""
        try:
            to = gp.member(member)
        except protocol.ProtocolError as exc:
            raise GroupError(gp.INVALID, str(exc)) from None
        return self._queue(gp.group_send(to, body))

    def group_status(self) -> int:
        """Ask for the group's status; its seq (the status comes to ``on_result``)."""
        return self._queue(gp.group_status())

    def _queue(self, message: dict) -> int:
        ref = str(next(self._refs))
        try:
            frame = protocol.encode({**message, "ref": ref})
        except protocol.ProtocolError as exc:  # over one frame: far over MAX_BODY
            raise GroupError(gp.TOO_LARGE, str(exc)) from None
        answered: Future = Future()
        self._queued[ref] = answered
        try:
            with self._send_lock:
                if self._sock is None:
                    raise GroupError(NOT_CONNECTED, f"guestd at {self.socket_path}")
                try:
                    self._sock.sendall(frame)
                except OSError as exc:
                    raise GroupError(NOT_CONNECTED, str(exc)) from None
            try:
                reply = answered.result(timeout=QUEUE_TIMEOUT)
            except FutureTimeout:
                raise GroupError(NO_ANSWER, f"guestd did not answer in {QUEUE_TIMEOUT:g}s") \
                    from None
        finally:
            self._queued.pop(ref, None)
        if reply.get("type") != gp.GROUP_QUEUED:
            raise GroupError(str(reply.get("reason") or gp.INVALID), str(reply.get("message")))
        return reply["seq"]

    def run(self) -> None:
        """Serve notices until :meth:`stop`; reconnect (1 s apart) when guestd goes away."""
        threading.Thread(target=self._call_back, name=f"guestd-app-{self.name}-group",
                         daemon=True).start()
        while not self._stop.is_set():
            try:
                self._session()
            except OSError as exc:
                LOG.debug("guestd at %s not reachable: %s", self.socket_path, exc)
            self.registered.clear()
            with self._send_lock:
                self._sock = None
            for ref in list(self._queued):
                future = self._queued.pop(ref, None)
                if future is not None and not future.done():
                    future.set_exception(GroupError(NOT_CONNECTED, "guestd went away"))
            self._stop.wait(1.0)

    def _call_back(self) -> None:
        """Run group callbacks one at a time, in order, until :meth:`stop`."""
        for item in iter(self._callbacks.get, None):
            handler, argument = item
            try:
                handler(argument)
            except Exception:
                LOG.exception("group callback %s failed", handler)

    def _settle(self, message: dict) -> bool:
        """Hand guestd's answer to a group-send to whoever waits for it (by ``ref``)."""
        future = self._queued.get(gp.parse_ref(message))
        if future is None or future.done():
            return False
        future.set_result(message)
        return True

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
                    elif message.get("type") == gp.GROUP_QUEUED:
                        self._settle(message)
                    elif message.get("type") == gp.GROUP_MESSAGE:
                        self._callbacks.put((self._message, message))
                    elif message.get("type") == gp.GROUP_RESULT:
                        self._callbacks.put((self._result, message))
                    elif message.get("type") == PEER_NOTICE:
                        self._callbacks.put((self._peer, message))
                    elif message.get("type") == protocol.FAILURE and not self._settle(message):
                        LOG.warning("guestd: %s", message.get("message"))

    def _message(self, message: dict) -> None:
        self.on_message(GroupMessage.of(message))

    def _result(self, message: dict) -> None:
        self.on_result(GroupResult.of(message))

    def _peer(self, message: dict) -> None:
        self.on_peer(PeerNotice.of(message))

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
                reply = protocol.done(notice.id, _offered(notice, self.on_notice(notice)))
        except Exception:
            LOG.exception("handler for %s %s failed", notice.event, notice.phase)
            return
        try:
            with self._send_lock:
                sock.sendall(protocol.encode(reply))
        except OSError as exc:
            LOG.warning("could not answer %s: %s", notice.id, exc)


def _offered(notice: Notice, returned: object) -> tuple:
    """The vCPUs a handler offers by returning :class:`Offline`; a malformed offer is
    logged and left out, so that the done still goes (else the prepare would wait for
    its deadline)."""
    if not isinstance(returned, Offline):
        return ()
    try:
        return protocol.parse_offline(list(returned.cpus))
    except (protocol.ProtocolError, TypeError) as exc:
        LOG.error("%s %s: offline picks ignored: %s", notice.event, notice.phase, exc)
        return ()
