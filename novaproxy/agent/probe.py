"""What the monitor asks a guest: guest-ping, and guestd's status file.

Both go through the guest agent with a deadline. The status file is read with
``guest-file-open/read/close`` (three cheap calls handled by qemu-ga itself)
rather than a process per heartbeat, and is validated as hostile input.
"""

from __future__ import annotations

import time

from guestd import protocol
from novaproxy.agent.guest_agent import CommandFailed, GuestAgentError, file_contents


class StatusUnreadable(Exception):
    """The guest's status file is missing, unreadable or invalid."""


def ping(agent, timeout: float) -> str | None:
    """None when the guest agent answered within ``timeout``, else why not."""
    try:
        agent.execute("guest-ping", timeout=timeout)
    except CommandFailed:
        return None  # an error reply is an answer: qemu-ga is alive (the RPC may be blocked)
    except GuestAgentError as exc:
        return str(exc) or type(exc).__name__
    return None


def read_status(agent, path: str, timeout: float) -> dict:
    """guestd's status (:func:`guestd.protocol.parse_status`), or StatusUnreadable."""
    deadline = time.monotonic() + timeout
    try:
        handle = agent.execute("guest-file-open", {"path": path, "mode": "r"},
                               timeout=_left(deadline))
    except GuestAgentError as exc:
        raise StatusUnreadable(f"cannot open {path}: {exc}") from None
    try:
        result = agent.execute("guest-file-read",
                               {"handle": handle, "count": protocol.MAX_FRAME + 1},
                               timeout=_left(deadline))
    except GuestAgentError as exc:
        raise StatusUnreadable(f"cannot read {path}: {exc}") from None
    finally:
        try:
            agent.execute("guest-file-close", {"handle": handle},
                          timeout=max(_left(deadline), 0.1))
        except GuestAgentError:
            pass  # qemu-ga frees handles when the guest restarts; nothing else to do
    try:
        data = file_contents(result, protocol.MAX_FRAME, path)
    except GuestAgentError as exc:
        raise StatusUnreadable(str(exc)) from None
    try:
        return protocol.parse_status(data)
    except protocol.ProtocolError as exc:
        raise StatusUnreadable(f"{path}: {exc}") from None


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)
