"""The QEMU guest agent (qemu-ga) as the host agent uses it: the client interface, and
what is built on it.

:class:`GuestAgent` is the seam: :class:`~novaproxy.agent.qga_socket.SocketGuestAgent`
(qemu-ga's unix socket: plain QEMU, tests) and
:class:`~novaproxy.agent.qga_libvirt.LibvirtGuestAgent` (through libvirt: Nova's hosts)
implement it; :mod:`~novaproxy.agent.hypervisor` hands them out (:class:`Guests`). On top
of any client: the guest-file API (:func:`read_file`, :func:`write_file`), which both
delivery (guestd's spool) and probing (guestd's status file) use, and :func:`guest_exec`.
Everything the guest sends back is untrusted: replies are size-capped and checked.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Protocol

LOG = logging.getLogger(__name__)
MAX_REPLY = 1024 * 1024  # bytes of one reply line; guest-exec output is capped well below
MAX_OUTPUT = 64 * 1024  # bytes of a program's stdout we accept
# A handle closed in the background (read_file's close_later) is closed within this.
CLOSE_TIMEOUT = 5.0


class GuestAgentError(Exception):
    """The guest agent refused or failed a command (or spoke garbage)."""


class GuestAgentTimeout(GuestAgentError):
    """The guest agent did not answer in time."""


class GuestAgentUnavailable(GuestAgentError):
    """There is no guest agent to talk to (no socket, channel not connected)."""


class CommandFailed(GuestAgentError):
    """The agent answered with an error; ``error_class`` is qemu-ga's class name."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


def result_of(reply: object):
    """qemu-ga's ``return`` in ``reply``, or the error it answered (:class:`CommandFailed`)."""
    if not isinstance(reply, dict):
        raise GuestAgentError("reply is not a JSON object")
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        raise CommandFailed(str(error.get("class", "GenericError")), str(error.get("desc", "")))
    if "return" not in reply:
        raise GuestAgentError("reply has neither return nor error")
    return reply["return"]


class NotOpened(CommandFailed):
    """qemu-ga answered ``guest-file-open`` with an error: no such file, or the RPC is blocked."""


class GuestAgent(Protocol):
    """A client of one guest's qemu-ga. Its calls to the guest are serialized, and a call
    waits for another only within its own ``timeout``."""

    # The longest pause between two guest-exec-status polls: what one poll costs through
    # this client decides how often a finished program is worth looking for.
    poll_cap: float

    def execute(self, command: str, arguments: dict | None = None,
                timeout: float = 5.0) -> object:
        """qemu-ga's ``return`` for ``command`` within ``timeout``; raises
        :class:`CommandFailed` for its error reply, :class:`GuestAgentTimeout`,
        :class:`GuestAgentUnavailable`, or :class:`GuestAgentError` for garbage."""
        ...

    def close(self) -> None:
        """Let the guest's agent go: its instance left this host."""
        ...


class Guests(Protocol):
    """The guests of this host (:mod:`novaproxy.agent.hypervisor`)."""

    def agent(self, instance: str) -> GuestAgent:
        """``instance``'s qemu-ga client; :class:`GuestAgentUnavailable` if it has none here."""
        ...


def open_file(qga: GuestAgent, path: str, mode: str, deadline: float) -> int:
    """A handle on ``path`` in the guest, checked: a handle is an int, and anything else a
    guest returns is an error, never an argument of the next calls. :class:`NotOpened` when
    qemu-ga refuses (no such file, file RPCs blocked)."""
    try:
        handle = qga.execute("guest-file-open", {"path": path, "mode": mode}, _left(deadline))
    except CommandFailed as exc:
        raise NotOpened(exc.error_class, exc.desc) from None
    if isinstance(handle, bool) or not isinstance(handle, int):
        raise GuestAgentError("guest-file-open returned no handle")
    return handle


def write_file(qga: GuestAgent, path: str, data: bytes, deadline: float) -> None:
    """``path`` in the guest holds ``data`` once this returns (qemu-ga flushes it on close,
    so a failed close is raised)."""
    handle = open_file(qga, path, "w", deadline)
    try:
        if data:
            qga.execute("guest-file-write",
                        {"handle": handle, "buf-b64": base64.b64encode(data).decode()},
                        _left(deadline))
    except GuestAgentError:
        _close_quietly(qga, handle, deadline)
        raise
    qga.execute("guest-file-close", {"handle": handle}, _left(deadline))


def read_file(qga: GuestAgent, path: str, max_bytes: int, deadline: float,
              close_later: bool = False) -> bytes:
    """The contents of ``path`` in the guest, checked by :func:`file_contents`;
    :class:`NotOpened` when it cannot be opened.

    The handle is closed whatever happens, and a failed close is not held against contents
    already read (qemu-ga keeps the handle until it restarts; nothing else is lost).
    ``close_later``: closed in the background, so that the caller has the contents one RPC
    sooner (the agent's calls to a guest are serialized, so the close still comes before
    the next call).
    """
    handle = open_file(qga, path, "r", deadline)
    try:
        reply = qga.execute("guest-file-read", {"handle": handle, "count": max_bytes + 1},
                            _left(deadline))
    except GuestAgentError:
        _close_quietly(qga, handle, deadline)
        raise
    if close_later:
        threading.Thread(target=_close_in_background, args=(qga, handle, path),
                         name="guest-file-close", daemon=True).start()
    else:
        _close_quietly(qga, handle, deadline)
    return file_contents(reply, max_bytes, path)


def _close_quietly(qga: GuestAgent, handle: int, deadline: float) -> None:
    """Close ``handle`` while an error is on its way out, or after its contents were read."""
    try:
        qga.execute("guest-file-close", {"handle": handle}, _left(deadline))
    except GuestAgentError:
        pass


def _close_in_background(qga: GuestAgent, handle: int, path: str) -> None:
    """:func:`read_file`'s ``close_later``: logged if it fails."""
    try:
        qga.execute("guest-file-close", {"handle": handle}, CLOSE_TIMEOUT)
    except GuestAgentError as exc:
        # qemu-ga keeps the handle until it restarts; nothing else is lost.
        LOG.warning("could not close %s in the guest: %s", path, exc)


def file_contents(reply: object, max_bytes: int, path: str) -> bytes:
    """The bytes of a ``guest-file-read`` reply for ``path``, checked as the hostile
    input it is: base64, at most ``max_bytes`` (the size is checked before decoding)."""
    encoded = reply.get("buf-b64") if isinstance(reply, dict) else None
    if not isinstance(encoded, str) or len(encoded) > (max_bytes + 3) * 4 // 3:
        raise GuestAgentError(f"{path}: no contents, or over {max_bytes} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise GuestAgentError(f"{path}: contents not base64") from None
    if len(data) > max_bytes:
        raise GuestAgentError(f"{path}: over {max_bytes} bytes")
    return data


def guest_exec(qga: GuestAgent, argv: list, stdin: bytes, timeout: float,
               env: list | None = None) -> tuple:
    """Run ``argv`` in the guest with ``stdin``; ``(exit code, stdout)`` within ``timeout``.

    Polls ``guest-exec-status`` from 1 ms, doubling up to the agent's
    client's ``poll_cap``: a quick program is seen within a few ms of its exit, a slow
    one costs few calls.
    """
    deadline = time.monotonic() + timeout
    arguments = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True,
                 "input-data": base64.b64encode(stdin).decode()}
    if env:
        arguments["env"] = env
    started = qga.execute("guest-exec", arguments, timeout)
    pid = started.get("pid") if isinstance(started, dict) else None
    if not isinstance(pid, int):
        raise GuestAgentError("guest-exec returned no pid")
    interval = 0.001
    cap = qga.poll_cap
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GuestAgentTimeout(f"{argv[0]} did not finish within {timeout:.1f}s")
        status = qga.execute("guest-exec-status", {"pid": pid}, remaining)
        if not isinstance(status, dict):
            raise GuestAgentError("guest-exec-status returned no object")
        if status.get("exited"):
            break
        time.sleep(min(interval, max(deadline - time.monotonic(), 0)))
        interval = min(interval * 2, cap)
    out = status.get("out-data", "")
    if not isinstance(out, str) or len(out) > MAX_OUTPUT * 4 // 3 + 4:
        raise GuestAgentError(f"program output larger than {MAX_OUTPUT} bytes")
    try:
        stdout = base64.b64decode(out, validate=True)
    except ValueError:
        raise GuestAgentError("program output is not base64") from None
    code = status.get("exitcode")
    return (code if isinstance(code, int) else -1), stdout


def _left(deadline: float) -> float:
    """Seconds left until ``deadline`` for one RPC; an expired one still gets its try."""
    return max(deadline - time.monotonic(), 0.001)
