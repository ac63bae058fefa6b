"""What the monitor asks a guest: guest-ping, and guestd's status file.

Both go through the guest agent with a deadline. The status file is read with the
guest-file API (three cheap calls handled by qemu-ga itself) rather than a process
per heartbeat, and is validated as hostile input.
"""

from __future__ import annotations

import time

from guestd import protocol
from novaproxy.agent.guest_agent import (
    CommandFailed,
    GuestAgent,
    GuestAgentError,
    NotOpened,
    read_file,
)


class StatusUnreadable(Exception):
    """The guest's status file is missing, unreadable or invalid."""


def ping(qga: GuestAgent, timeout: float) -> str | None:
    """None when the guest agent answered within ``timeout``, else why not."""
    try:
        qga.execute("guest-ping", timeout=timeout)
    except CommandFailed:
        return None  # an error reply is an answer: qemu-ga is alive (the RPC may be blocked)
    except GuestAgentError as exc:
        return str(exc) or type(exc).__name__
    return None


def read_status(qga: GuestAgent, path: str, timeout: float) -> dict:
    """guestd's status (:func:`guestd.protocol.parse_status`), or StatusUnreadable."""
    try:
        data = read_file(qga, path, protocol.MAX_FRAME, time.monotonic() + timeout)
    except NotOpened as exc:
        raise StatusUnreadable(f"cannot open {path}: {exc}") from None
    except GuestAgentError as exc:
        raise StatusUnreadable(f"cannot read {path}: {exc}") from None
    try:
        return protocol.parse_status(data)
    except protocol.ProtocolError as exc:
        raise StatusUnreadable(f"{path}: {exc}") from None
