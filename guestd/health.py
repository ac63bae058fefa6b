"""Health hooks, run one at a time on a timer, and how guestd logs a change of health.

Applications report their own health over the socket (:mod:`guestd.registry`); a
script in the health directory is an application that cannot: guestd runs it every
interval (:func:`guestd.hooks.check`) and keeps its verdict as ``hook:<file name>``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from guestd import hooks, protocol

LOG = logging.getLogger(__name__)


def log_change(name: str, previous: dict | None, entry: dict) -> None:
    """Log a change of health (or of the action asked for), not every report."""
    if previous is not None and previous["healthy"] == entry["healthy"] and (
            entry["healthy"] or previous["action"] == entry["action"]):
        return
    if entry["healthy"]:
        LOG.info("%s is healthy%s", name, f": {entry['reason']}" if entry["reason"] else "")
    else:
        LOG.warning("%s is unhealthy: %s; action requested: %s", name,
                    entry["reason"] or "no reason given", entry["action"])


class HealthHooks:
    """The health hooks in one directory and the latest verdict of each."""

    def __init__(self, directory: str | None, interval: float, timeout: float) -> None:
        self.directory = directory
        self.interval = interval
        self.timeout = timeout
        self._verdicts: dict = {}  # "hook:<file name>" -> its latest protocol.app_health
        self._lock = threading.Lock()

    def reports(self) -> list:
        """The latest verdict of every hook still there."""
        with self._lock:
            return list(self._verdicts.values())

    def run(self, stopping: threading.Event) -> None:
        """Run the hooks one at a time, a round every interval (or at once after a round
        that took longer), until ``stopping``."""
        while True:
            started = time.monotonic()
            paths = hooks.discover(self.directory)
            names = {f"hook:{os.path.basename(path)}" for path in paths}
            with self._lock:
                gone = [name for name in self._verdicts if name not in names]
                for name in gone:
                    del self._verdicts[name]
            for name in gone:
                LOG.info("health hook %s removed", name)
            for path in paths:
                if stopping.is_set():
                    return
                name = f"hook:{os.path.basename(path)}"
                entry = protocol.app_health(name, *hooks.check(path, self.timeout))
                with self._lock:
                    previous, self._verdicts[name] = self._verdicts.get(name), entry
                log_change(name, previous, entry)
            if stopping.wait(max(started + self.interval - time.monotonic(), 0)):
                return
