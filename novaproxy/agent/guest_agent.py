"""Clients of the QEMU guest agent (qemu-ga): over its unix socket or through libvirt.

Both offer ``execute(command, arguments, timeout)``; :func:`guest_exec` runs a
program in the guest on top of either. Everything the guest sends back is
untrusted: replies are size-capped and must be JSON objects.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import random
import re
import select
import socket
import threading
import time

# How libvirt reports qemu-ga's own error replies (VIR_ERR_INTERNAL_ERROR), and the
# descriptions qemu-ga gives an unknown or blocked (block-rpcs) command.
_AGENT_ERROR = re.compile(r"unable to execute QEMU agent command '[^']*'(?:: (.*))?", re.S)
_NOT_FOUND = re.compile(r"^(?:The command|Command) \S+ has (?:not been found|been disabled)")
MAX_REPLY = 1024 * 1024  # bytes of one reply line; guest-exec output is capped well below
MAX_OUTPUT = 64 * 1024  # bytes of a program's stdout we accept


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


def _result(reply: object):
    if not isinstance(reply, dict):
        raise GuestAgentError("reply is not a JSON object")
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        raise CommandFailed(str(error.get("class", "GenericError")), str(error.get("desc", "")))
    if "return" not in reply:
        raise GuestAgentError("reply has neither return nor error")
    return reply["return"]


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
        return _result(self._read_reply(deadline))

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


class LibvirtGuestAgent:
    """qemu-ga through libvirt (``libvirt_qemu.qemuAgentCommand``).

    libvirt sends its own guest-sync before a command only while it has lost sync
    with the agent (after a timeout), and waits the domain's agent response timeout
    for it, 5 s at most. So while the agent answers, the domain keeps libvirt's
    default (its typed agent commands block: nova-compute's quiesce for snapshots
    and set-password get all the time they need), and our own commands are bounded
    by qemuAgentCommand's timeout. After a timeout, and until the agent answers
    again, the domain's response timeout is lowered to ``response_timeout`` (1 s),
    so that a ping to a hung agent costs about the monitoring interval, not 5 s.
    libvirt's typed agent APIs (``guestVcpus``, ``setGuestVcpus``) wait the domain's
    response timeout for the command itself, so :meth:`vcpus` and :meth:`set_vcpus`
    set it to their own deadline for the call. Calls are serialised by a lock
    (libvirt runs one agent command per domain at a time anyway), and a call waits
    for another only within its own deadline.
    """

    # A poll costs ~1.5 ms through libvirt: poll less often.
    poll_cap = 0.005

    def __init__(self, domain, response_timeout: int = 1) -> None:
        import libvirt  # noqa: F401  (the agent's libvirt mode only)
        import libvirt_qemu

        self._qemu = libvirt_qemu
        self._libvirt = libvirt
        self.domain = domain
        self.response_timeout = response_timeout
        self._lock = threading.Lock()
        # Whether the domain's response timeout is lowered; None: unknown (a previous
        # agent may have left it lowered), so the first call sets it either way.
        self._lowered: bool | None = None

    def execute(self, command: str, arguments: dict | None = None, timeout: float = 5.0):
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        deadline = time.monotonic() + timeout
        with self._locked(deadline):
            reply = self._answered(self._qemu.qemuAgentCommand, self.domain,
                                   json.dumps(message), _seconds(deadline), 0)
        if len(reply) > MAX_REPLY:
            raise GuestAgentError(f"reply larger than {MAX_REPLY} bytes")
        try:
            return _result(json.loads(reply))
        except ValueError:
            raise GuestAgentError("reply is not JSON") from None

    def vcpus(self, timeout: float = 10.0) -> dict:
        """The guest's vCPUs as its agent reports them (libvirt's ``guestVcpus``):
        ``{"vcpus": "0-1", "online": "0", "offlinable": "1"}``, cpu lists as text."""
        return self._typed(timeout, self.domain.guestVcpus)

    def set_vcpus(self, cpus: str, online: bool, timeout: float = 30.0) -> None:
        """Bring the guest's ``cpus`` (a cpu list: "1", "1-3") online or offline
        through its agent. Onlining a vCPU can take seconds in a loaded guest."""
        self._typed(timeout, self.domain.setGuestVcpus, cpus, 1 if online else 0)

    def _typed(self, timeout: float, call, *args):
        """A typed agent API, with the domain's response timeout at our deadline."""
        deadline = time.monotonic() + timeout
        with self._locked(deadline):
            self._set_response_timeout(_seconds(deadline))
            self._lowered = None  # neither: set back below, whatever happens
            return self._answered(call, *args)

    def _answered(self, call, *args):
        """``call``, keeping the domain's response timeout lowered exactly while the
        agent is out of sync: after a timeout; any other outcome (an answer, an error
        reply, no agent connected) puts libvirt's default back."""
        try:
            result = self._call(call, *args)
        except GuestAgentTimeout:
            if self._lowered is not True:
                self._set_response_timeout(self.response_timeout)
                self._lowered = True
            raise
        except GuestAgentError:
            self._restore_default()
            raise
        self._restore_default()
        return result

    def _restore_default(self) -> None:
        if self._lowered is not False:
            self._set_response_timeout(self._libvirt.VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK)
            self._lowered = False

    @contextlib.contextmanager
    def _locked(self, deadline: float):
        if not self._lock.acquire(timeout=max(deadline - time.monotonic(), 0)):
            raise GuestAgentTimeout("busy with another guest agent call until the deadline")
        try:
            yield
        finally:
            self._lock.release()

    def _set_response_timeout(self, seconds: int) -> None:
        try:
            self.domain.agentSetResponseTimeout(seconds, 0)
        except self._libvirt.libvirtError:
            pass  # older libvirt, or the domain is gone: the call says which

    def _call(self, call, *args):
        try:
            return call(*args)
        except self._libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code in (self._libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                        self._libvirt.VIR_ERR_AGENT_UNSYNCED,
                        self._libvirt.VIR_ERR_OPERATION_TIMEOUT):
                raise GuestAgentTimeout(str(exc)) from None
            if code in (self._libvirt.VIR_ERR_OPERATION_INVALID, self._libvirt.VIR_ERR_NO_DOMAIN,
                        self._libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                        self._libvirt.VIR_ERR_NO_SUPPORT):
                raise GuestAgentUnavailable(str(exc)) from None
            failed = _AGENT_ERROR.search(str(exc))
            if code == self._libvirt.VIR_ERR_INTERNAL_ERROR and failed:
                # qemu-ga answered with an error (libvirt keeps its text, not its class):
                # an answer, as over the socket, so that a blocked guest-ping still proves
                # the agent alive and a missing guestd-ctl means "not negotiating".
                desc = failed.group(1) or ""
                raise CommandFailed("CommandNotFound" if _NOT_FOUND.search(desc)
                                    else "GenericError", desc) from None
            raise GuestAgentError(str(exc)) from None

    def close(self) -> None:
        pass


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


def _seconds(deadline: float) -> int:
    """Whole seconds left (libvirt's unit), at least one."""
    return max(1, math.ceil(deadline - time.monotonic()))


def guest_exec(agent, argv: list, stdin: bytes, timeout: float,
               env: list | None = None) -> tuple:
    """Run ``argv`` in the guest with ``stdin``; ``(exit code, stdout)`` within ``timeout``.

    Polls ``guest-exec-status`` from 1 ms, doubling up to the agent's
    ``poll_cap``: a quick program is seen within a few ms of its exit, a slow
    one costs few calls.
    """
    deadline = time.monotonic() + timeout
    arguments = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True,
                 "input-data": base64.b64encode(stdin).decode()}
    if env:
        arguments["env"] = env
    started = agent.execute("guest-exec", arguments, timeout)
    pid = started.get("pid") if isinstance(started, dict) else None
    if not isinstance(pid, int):
        raise GuestAgentError("guest-exec returned no pid")
    interval = 0.001
    cap = getattr(agent, "poll_cap", 0.005)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GuestAgentTimeout(f"{argv[0]} did not finish within {timeout:.1f}s")
        status = agent.execute("guest-exec-status", {"pid": pid}, remaining)
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
