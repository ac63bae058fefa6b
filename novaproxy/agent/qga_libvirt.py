"""qemu-ga through libvirt: the :class:`~novaproxy.agent.guest_agent.GuestAgent` of
Nova's compute hosts (``libvirt_qemu.qemuAgentCommand``)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time

from novaproxy.agent import guest_agent

# How libvirt reports qemu-ga's own error replies (VIR_ERR_INTERNAL_ERROR), and the
# descriptions qemu-ga gives an unknown or blocked (block-rpcs) command.
_AGENT_ERROR = re.compile(r"unable to execute QEMU agent command '[^']*'(?:: (.*))?", re.S)
_NOT_FOUND = re.compile(r"^(?:The command|Command) \S+ has (?:not been found|been disabled)")


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
        if len(reply) > guest_agent.MAX_REPLY:
            raise guest_agent.GuestAgentError(f"reply larger than {guest_agent.MAX_REPLY} bytes")
        try:
            return guest_agent.result_of(json.loads(reply))
        except ValueError:
            raise guest_agent.GuestAgentError("reply is not JSON") from None

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
        except guest_agent.GuestAgentTimeout:
            if self._lowered is not True:
                self._set_response_timeout(self.response_timeout)
                self._lowered = True
            raise
        except guest_agent.GuestAgentError:
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
            raise guest_agent.GuestAgentTimeout(
                "busy with another guest agent call until the deadline")
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
                raise guest_agent.GuestAgentTimeout(str(exc)) from None
            if code in (self._libvirt.VIR_ERR_OPERATION_INVALID, self._libvirt.VIR_ERR_NO_DOMAIN,
                        self._libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                        self._libvirt.VIR_ERR_NO_SUPPORT):
                raise guest_agent.GuestAgentUnavailable(str(exc)) from None
            failed = _AGENT_ERROR.search(str(exc))
            if code == self._libvirt.VIR_ERR_INTERNAL_ERROR and failed:
                # qemu-ga answered with an error (libvirt keeps its text, not its class):
                # an answer, as over the socket, so that a blocked guest-ping still proves
                # the agent alive and a missing guestd-ctl means "not negotiating".
                desc = failed.group(1) or ""
                raise guest_agent.CommandFailed("CommandNotFound" if _NOT_FOUND.search(desc)
                                                else "GenericError", desc) from None
            raise guest_agent.GuestAgentError(str(exc)) from None

    def close(self) -> None:
        pass


def _seconds(deadline: float) -> int:
    """Whole seconds left (libvirt's unit), at least one."""
    return max(1, math.ceil(deadline - time.monotonic()))
