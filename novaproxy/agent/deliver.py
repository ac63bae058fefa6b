"""Deliver one request to a guest through qemu-ga, and the reply: the agent's
:class:`Deliverer`, bound to its guests, and what a guest's answer means (pure).

Two ways in. The spool, first: the request frame is written to ``<spool>/<id>.req``
with qemu-ga's guest-file-* RPCs and guestd's answer read back from ``<id>.ans``, so
no process starts in the guest (starting Python costs ~150 ms under TCG). Then
``guestd-ctl`` run with guest-exec, when the spool is off, absent (an older guestd, or
none: guestd-ctl then says "not-negotiating") or its RPCs are blocked.

The guest is untrusted: its output is size-capped by the guest agent client,
must parse as an answer to this very request id and instance, and anything else
becomes an ``invalid`` reply that names what was wrong, never a vote. A valid
answer's length is never held against it: an answer that lists a rejection is a
rejection, whatever its result says and however many voters it lists.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import time

from guestd import protocol, votes
from novaproxy import replies
from novaproxy.agent import guest_agent
from novaproxy.agent.guest_agent import GuestAgent, Guests

LOG = logging.getLogger(__name__)
# Kept back from the proxy's deadline: the reply's way back through Redis.
RETURN_MARGIN = 0.2
# Kept back from the exec deadline: guestd-ctl's start and guest-exec polling.
EXEC_MARGIN = 0.3
# Kept back from the spool deadline: reading the answer file back.
SPOOL_MARGIN = 0.1
# Answer file polls. Each is an RPC the guest serves while it works on the answer
# (under TCG a poll costs ~3 ms and slows the hook it waits for), so the first comes
# after SPOOL_FIRST_FRACTION of the fastest answer this guest ever gave (at most
# SPOOL_FIRST_CAP), then every SPOOL_POLL_FRACTION of the time waited so far, between
# SPOOL_POLL_MIN and SPOOL_POLL_CAP: an answer is seen at most ~1/8 late, and a guest
# that deliberates for seconds is not polled hundreds of times.
SPOOL_FIRST_FRACTION, SPOOL_FIRST_CAP = 0.8, 0.1
SPOOL_POLL_FRACTION, SPOOL_POLL_MIN, SPOOL_POLL_CAP = 0.125, 0.003, 0.1
# guestd takes a request file within 10 ms; one still there after this means no
# guestd runs (its spool outlives it): guest-exec, whose guestd-ctl says so, takes over.
SPOOL_PICKUP = 2.0
# After the spool failed a guest, only guest-exec for this long: the fallback does not
# pay the failed attempt every time.
SPOOL_RETRY = 60.0
# SpoolMemory keeps the fastest answers of this many instances, then starts afresh.
FASTEST_REMEMBERED = 4096
# A guest agent that refuses the connection may be restarting (qemu-ga restarted by the
# guest's init, the guest rebooting): tried again within this much of the deadline.
RECONNECT_WINDOW = 1.0
RECONNECT_PAUSE = 0.05


class _SpoolUnusable(Exception):
    """The spool cannot carry this request, and nothing reached guestd: guest-exec may."""


class _NotHandedOver(Exception):
    """qemu-ga did not take the request: the guest was never asked (``unreachable``, not
    the guest's silence). ``retry``: the connection was refused, qemu-ga may be back soon."""

    def __init__(self, why: str, retry: bool) -> None:
        super().__init__(why)
        self.retry = retry


def _does_not_negotiate(exc: guest_agent.CommandFailed) -> bool:
    """guestd-ctl is not installed, or the guest's qemu-ga blocks guest-exec."""
    return (exc.error_class == "CommandNotFound"
            or "Failed to execute child process" in exc.desc)


def budget(timeout: float, age: float) -> float:
    """Seconds the agent may spend on a request ``age`` seconds old."""
    return timeout - age - RETURN_MARGIN


def interpret(req: dict, exit_code: int, stdout: bytes, host: str) -> replies.Reply:
    """The reply for what ``guestd-ctl`` printed (pure)."""
    return _interpret(req, stdout, host, "guestd-ctl", f"guestd-ctl exited {exit_code}")


def _interpret(req: dict, data: bytes, host: str, source: str,
               garbled: str) -> replies.Reply:
    """The reply for an answer frame from ``source``; ``garbled`` prefixes undecodable ones."""
    def invalid(why: str) -> replies.Reply:
        return _reply(req, host, replies.INVALID, why)

    try:
        message = protocol.decode(data)
    except protocol.ProtocolError as exc:
        return invalid(f"{garbled}: {exc}")
    if message.get("type") == protocol.FAILURE:
        return invalid(f"{source}: {str(message.get('message'))[:protocol.MAX_REASON]}")
    try:
        answer = protocol.parse_answer(message, req["id"], req["instance"])
    except protocol.ProtocolError as exc:
        return invalid(str(exc))
    return _taken(req, answer, host)


def _taken(req: dict, answer: dict, host: str) -> replies.Reply:
    """The reply for a valid answer: the stricter of the guest's result and the host's
    own count of the voters it lists (a guest that lists a rejection has rejected), and
    at most :data:`protocol.MAX_VOTERS` of them, those that decided first (an older
    guestd lists every voter)."""
    result, voters, notes = answer["result"], answer["voters"], []
    if req["phase"] == protocol.VOTE and votes.tally(voters, req["silence"]) == protocol.REJECT:
        if result != protocol.REJECT:
            notes.append(f"the guest answered {result} but lists a rejection")
        result = protocol.REJECT
    listed = votes.ranked(voters, req["silence"])[:protocol.MAX_VOTERS]
    if answer["voters_total"] > len(listed):
        notes.append(f"{len(listed)} of {answer['voters_total']} voters listed")
    return replies.Reply(req["id"], req["instance"], result, voters=listed,
                              detail="; ".join(notes), host=host)


class SpoolMemory:
    """What the agent remembers of each guest's spool, for all its delivery threads: when
    to try it again after it failed, and the fastest answer it carried."""

    def __init__(self) -> None:
        self._off: dict = {}  # instance -> time.monotonic() until which its spool is not tried
        self._fastest: dict = {}  # instance -> the fastest answer through its spool, seconds
        self._lock = threading.Lock()

    def spool_on(self, instance: str) -> bool:
        """Whether ``instance``'s spool is worth trying (not failed in the last
        :data:`SPOOL_RETRY` seconds)."""
        with self._lock:
            until = self._off.get(instance)
            if until is not None and until <= time.monotonic():
                del self._off[instance]
                until = None
        return until is None

    def spool_failed(self, instance: str) -> None:
        with self._lock:
            self._off[instance] = time.monotonic() + SPOOL_RETRY

    def fastest(self, instance: str) -> float | None:
        with self._lock:
            return self._fastest.get(instance)

    def answered(self, instance: str, seconds: float) -> None:
        with self._lock:
            if len(self._fastest) >= FASTEST_REMEMBERED and instance not in self._fastest:
                self._fastest.clear()
            self._fastest[instance] = min(seconds, self._fastest.get(instance, seconds))


class Deliverer:
    """Delivers requests to this host's guests, and remembers how each guest's spool fares;
    one per agent, shared by its threads.

    ``guestd_ctl``: the argv that runs guestd-ctl in a guest; ``host``: named in every
    reply; ``spool_dir``: guestd's spool in the guest (relative paths are qemu-ga's cwd's),
    empty for guest-exec only.
    """

    def __init__(self, guests: Guests, *, guestd_ctl: tuple, host: str,
                 spool_dir: str) -> None:
        self.guests = guests
        self.guestd_ctl = guestd_ctl
        self.host = host
        self.spool_dir = spool_dir
        self.memory = SpoolMemory()

    def deliver(self, req: dict, timeout: float) -> replies.Reply:
        """Ask the guest; a reply within ``timeout`` seconds, whatever happens.

        A request qemu-ga never took is ``unreachable`` (the guest was not asked), one it
        took and nobody answered in time is ``timeout``; a refused connection is tried
        again for up to :data:`RECONNECT_WINDOW` (qemu-ga restarting).
        """
        if timeout <= EXEC_MARGIN:
            return _reply(req, self.host, replies.EXPIRED,
                          f"only {timeout:.2f}s left when the agent got it")
        deadline = time.monotonic() + timeout
        reconnect_until = min(time.monotonic() + RECONNECT_WINDOW, deadline - EXEC_MARGIN)
        while True:
            try:
                return self._attempt(req, deadline)
            except _NotHandedOver as exc:
                if not exc.retry or time.monotonic() + RECONNECT_PAUSE >= reconnect_until:
                    return _reply(req, self.host, replies.UNREACHABLE,
                                  f"the request never reached the guest: {exc}")
                time.sleep(RECONNECT_PAUSE)

    def _attempt(self, req: dict, deadline: float) -> replies.Reply:
        """One attempt of :meth:`deliver`; raises :class:`_NotHandedOver` when it may be
        retried or must be called unreachable."""
        instance, host = req["instance"], self.host
        try:
            try:
                qga = self.guests.agent(instance)
            except guest_agent.GuestAgentUnavailable as exc:
                raise _NotHandedOver(str(exc), retry=True) from None
            if self.spool_dir and self.memory.spool_on(instance) and _spoolable(req["id"]):
                try:
                    answer = self._via_spool(qga, req, deadline)
                    return _interpret(req, answer, host, "guestd", "guestd's answer file")
                except _SpoolUnusable as exc:
                    LOG.info("spool of %s unusable (%s): guest-exec for the next %gs",
                             instance, exc, SPOOL_RETRY)
                    self.memory.spool_failed(instance)
            seconds = deadline - time.monotonic()
            if seconds <= EXEC_MARGIN:
                return _reply(req, host, replies.TIMEOUT,
                              "no time left for guest-exec after the spool")
            guest_timeout = round(seconds - EXEC_MARGIN, 3)
            guest_req = {**req, "timeout": guest_timeout}
            # --timeout lets guestd-ctl relay the request without parsing it (a faster start).
            argv = [*self.guestd_ctl, "--timeout", str(guest_timeout)]
            exit_code, stdout = guest_agent.guest_exec(
                qga, argv, json.dumps(guest_req).encode(), seconds)
        except guest_agent.GuestAgentTimeout as exc:
            return _reply(req, host, replies.TIMEOUT, str(exc))
        except guest_agent.GuestAgentUnavailable as exc:
            return _reply(req, host, replies.UNREACHABLE, str(exc))
        except guest_agent.CommandFailed as exc:
            if _does_not_negotiate(exc):
                return _reply(req, host, protocol.NOT_NEGOTIATING, str(exc))
            return _reply(req, host, replies.UNREACHABLE, str(exc))
        except guest_agent.GuestAgentError as exc:
            return _reply(req, host, replies.INVALID, str(exc))
        return interpret(req, exit_code, stdout, host)

    def _via_spool(self, qga: GuestAgent, req: dict, deadline: float) -> bytes:
        """Put ``req`` in the spool; guestd's answer frame, by ``deadline``.

        Raises :class:`_SpoolUnusable` when the request file cannot be written (no spool
        directory, file RPCs blocked) or no guestd took it in time (then it is emptied, so
        that a guestd starting later drops it rather than acting on a stale request).
        """
        base = posixpath.join(self.spool_dir, req["id"])
        frame = protocol.encode({**req, "timeout": round(
            deadline - time.monotonic() - SPOOL_MARGIN, 3)})
        try:
            guest_agent.write_file(qga, base + protocol.REQ_SUFFIX, frame, deadline)
        except guest_agent.CommandFailed as exc:
            raise _SpoolUnusable(str(exc)) from None
        except guest_agent.GuestAgentTimeout as exc:
            raise _NotHandedOver(f"qemu-ga did not answer: {exc}", retry=False) from None
        except guest_agent.GuestAgentUnavailable as exc:
            raise _NotHandedOver(str(exc), retry=True) from None
        written = time.monotonic()
        pickup_by = written + SPOOL_PICKUP
        fastest = self.memory.fastest(req["instance"])
        while True:
            waited = time.monotonic() - written
            left = deadline - time.monotonic()
            if left <= 0:
                raise guest_agent.GuestAgentTimeout("no answer in guestd's spool in time")
            time.sleep(min(answer_poll_wait(waited, fastest), left))
            looked = time.monotonic()
            try:
                answer = _read(qga, base + protocol.ANS_SUFFIX, deadline, close_later=True)
                if answer is not None:
                    self.memory.answered(req["instance"], looked - written)
                    return answer
                if time.monotonic() >= pickup_by:
                    pickup_by = float("inf")
                    if _read(qga, base + protocol.REQ_SUFFIX, deadline) is not None:
                        guest_agent.write_file(qga, base + protocol.REQ_SUFFIX, b"", deadline)
                        raise _SpoolUnusable(
                            f"guestd took no request within {SPOOL_PICKUP:g}s")
            except guest_agent.CommandFailed as exc:
                # The request may be guestd's already: an error, never a fallback.
                raise guest_agent.GuestAgentError(f"spool: {exc}") from None
            except guest_agent.GuestAgentUnavailable as exc:
                # qemu-ga went away after taking the request (restarting?): guestd may
                # still answer into the spool, so look again until the deadline.
                LOG.info("spool of %s: %s; looking for the answer again", req["instance"], exc)
                time.sleep(min(RECONNECT_PAUSE, max(deadline - time.monotonic(), 0)))



def _reply(req: dict, host: str, outcome: str, detail: str) -> replies.Reply:
    return replies.Reply(req["id"], req["instance"], outcome, detail=detail, host=host)


def _spoolable(rid: str) -> bool:
    try:
        protocol.spool_name(rid)
    except protocol.ProtocolError:
        return False
    return True


def answer_poll_wait(waited: float, fastest: float | None) -> float:
    """Seconds to sleep before the next look for the answer, ``waited`` seconds after the
    request was written, for a guest whose ``fastest`` answer so far took that long."""
    first = min(SPOOL_FIRST_FRACTION * fastest, SPOOL_FIRST_CAP) if fastest else 0.0
    if waited < first:
        return first - waited
    return min(max(waited * SPOOL_POLL_FRACTION, SPOOL_POLL_MIN), SPOOL_POLL_CAP)


def _read(qga: GuestAgent, path: str, deadline: float, close_later: bool = False) -> bytes | None:
    """The contents of ``path`` (at most one frame), None if it cannot be opened."""
    try:
        return guest_agent.read_file(qga, path, protocol.MAX_FRAME, deadline, close_later)
    except guest_agent.NotOpened:
        return None
