"""guestd's spool: host requests as files, answered without any process started.

The host drops a request frame into the spool directory (``<id>.req``, written with
qemu-ga's guest-file-* RPCs, so no process starts in the guest, which costs ~150 ms
under TCG); guestd picks it up as soon as it is closed (inotify; without it, within
:data:`POLL`), answers it exactly as a relayed request and writes the answer frame to
``<id>.ans``. The directory is guestd's own, mode 0700: only root (qemu-ga) may put
requests there. Whatever a file holds, the spool never takes guestd down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable

from guestd import atomic, inotify, protocol

LOG = logging.getLogger(__name__)
# Without inotify the spool is scanned this often: the latency a spooled request adds.
POLL = 0.01
# With inotify a scan follows every change, and comes at least this often: incomplete
# requests expire and old answers go.
IDLE = 0.5
# A request file still without its final newline after this is garbage.
INCOMPLETE = 5.0
# Answers the host never collected (it cannot delete files) are removed after this,
# by a sweep every SWEEP seconds.
ANSWER_TTL = 600.0
SWEEP = 30.0


class Spool:
    """The spool in ``directory``; ``handle(req)`` answers each request in it."""

    def __init__(self, directory: str, handle: Callable[[dict], dict]) -> None:
        self.directory = directory
        self._handle = handle
        self._watch: inotify.DirectoryWatch | None = None

    def open(self) -> None:
        """Make the directory, guestd's own, and watch it."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)  # whatever the umask, or whoever made it before
        try:
            self._watch = inotify.DirectoryWatch(self.directory)
        except inotify.Unavailable as exc:
            LOG.info("spool in %s, scanned every %gs (%s)", self.directory, POLL, exc)
            return
        LOG.info("spool in %s, watched with inotify", self.directory)

    def run(self, stopping: threading.Event) -> None:
        """Scan the spool until ``stopping``: take complete requests, drop garbage, expire
        old answers. Never raises."""
        pending: dict = {}  # incomplete request file -> when first seen
        stuck: set = set()  # garbage that could not be removed: not reported again
        sweep_after = 0.0
        watch = self._watch
        while not stopping.is_set():
            if watch is not None and not watch.alive:
                LOG.warning("spool: the inotify watch on %s is gone; scanning every %gs",
                            self.directory, POLL)
                watch.close()
                watch = None
            if watch is not None:
                watch.wait(IDLE)
            elif stopping.wait(POLL):
                break
            try:
                with os.scandir(self.directory) as entries:
                    names = [entry.name for entry in entries
                             if entry.name.endswith(protocol.REQ_SUFFIX)]
                for name in names:
                    if name not in stuck:
                        self._take(name, pending, stuck)
                pending = {name: seen for name, seen in pending.items() if name in names}
                stuck.intersection_update(names)
                if time.monotonic() >= sweep_after:
                    self._sweep_answers()
                    sweep_after = time.monotonic() + SWEEP
            except Exception:  # the spool must never take guestd down
                LOG.exception("spool scan of %s failed", self.directory)
                stopping.wait(1.0)
        if watch is not None:
            watch.close()

    def _take(self, name: str, pending: dict, stuck: set) -> None:
        """One ``.req`` file: handled in the background once complete, else left or dropped."""
        path = os.path.join(self.directory, name)
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
            if time.monotonic() - seen > INCOMPLETE:
                self._discard(path, f"still incomplete after {INCOMPLETE:g}s", stuck)
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            LOG.warning("spool: cannot remove %s (%s); left alone", name, exc)
            stuck.add(name)
            return
        threading.Thread(target=self._answer, args=(rid, data), daemon=True).start()

    def _answer(self, rid: str, data: bytes) -> None:
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
            answer = self._handle(req)
        try:
            atomic.write(os.path.join(self.directory, rid + protocol.ANS_SUFFIX),
                         protocol.encode(answer), 0o600)
        except OSError as exc:
            LOG.error("spool: cannot write the answer to %s: %s", rid, exc)

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
        """Remove answers (and temporary files of a crash) older than :data:`ANSWER_TTL`."""
        expired = time.time() - ANSWER_TTL
        old = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.endswith((protocol.ANS_SUFFIX, ".tmp")):
                    # Suppressed: a temporary file may be renamed under our feet.
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < expired:
                            os.unlink(entry.path)
                            old += 1
        if old:
            LOG.info("spool: removed %d answers older than %gs", old, ANSWER_TTL)
