"""guestd's status file: how the host knows that guestd is alive and how its
applications are doing, read through qemu-ga without starting a process.

Rewritten whole every interval (:func:`guestd.atomic.write`): ``seq`` advances at every
write, also across guestd restarts, and ``apps`` holds the latest health of every
connected application and health hook, unhealthy ones first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from guestd import atomic, protocol

LOG = logging.getLogger(__name__)
# At most one log line per this many seconds while the status file cannot be written.
ERROR_LOG_INTERVAL = 60.0
# Reasons are cut to this when the full status would not fit in one frame (many
# applications with long non-ASCII reasons); 64 entries then always fit.
SHORT_REASON = 64


def contents(seq: int, interval: float, entries: list) -> bytes:
    """The status file's contents: unhealthy entries first, so that the cut at
    :data:`protocol.MAX_APPS` never hides one."""
    entries = sorted(entries, key=lambda entry: (entry["healthy"], entry["name"]))
    try:
        return protocol.encode(protocol.status(seq, interval, entries))
    except protocol.ProtocolError:  # over one frame: keep every verdict, cut the reasons
        return protocol.encode(protocol.status(seq, interval, [
            {**entry, "reason": entry["reason"][:SHORT_REASON]} for entry in entries]))


def previous_seq(path: str) -> int:
    """The seq of the status file a previous guestd left, so that a restarted guestd
    carries on counting and never looks to the host as if it went backwards."""
    try:
        with open(path, "rb") as f:
            return protocol.parse_status(f.read(protocol.MAX_FRAME + 1))["seq"]
    except (OSError, protocol.ProtocolError):
        return 0


class StatusFile:
    """Writes the status file every ``interval`` with the health ``reports()`` gives."""

    def __init__(self, path: str, interval: float, reports: Callable[[], list]) -> None:
        self.path = path
        self.interval = interval
        self._reports = reports
        self._seq = 0
        self._failures = 0
        self._log_after = 0.0

    def start(self) -> None:
        """Carry on from the previous guestd's count; the first write, at once."""
        self._seq = previous_seq(self.path)
        self.write()

    def run(self, stopping: threading.Event) -> None:
        """A write every interval until ``stopping``."""
        while not stopping.wait(self.interval):
            self.write()

    def write(self) -> None:
        """One write; a failure is counted and logged, never raised: the beat goes on."""
        try:
            data = contents(self._seq + 1, self.interval, self._reports())
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            atomic.write(self.path, data, 0o644)
        except (OSError, ValueError) as exc:
            self._failures += 1
            if time.monotonic() >= self._log_after:
                LOG.error("cannot write the status file %s: %s (%d failed writes; next report "
                          "in %gs at the latest)", self.path, exc, self._failures,
                          ERROR_LOG_INTERVAL)
                self._log_after = time.monotonic() + ERROR_LOG_INTERVAL
            return
        self._seq += 1
        if self._failures:
            LOG.info("status file %s written again after %d failed writes", self.path,
                     self._failures)
            self._failures, self._log_after = 0, 0.0
