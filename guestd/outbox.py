"""guestd's outbox: the group messages its applications sent, until the host takes them.

The host reads the file through qemu-ga (no process started in the guest) and answers
with a receipt; so the file is rewritten whole (:func:`guestd.atomic.write`) at every
change, and holds at most :data:`group_protocol.MAX_OUTBOX` entries. It exists only while
it holds entries: the host polls it twice a second, and a missing file costs the host
one failed ``guest-file-open`` where an empty one costs an open, a read and a close.
``seq`` counts from 1 within an epoch, a new one at every guestd start: the host tells a
restarted guestd's entries from those it already took, and a receipt for an older epoch
drops nothing.
"""

from __future__ import annotations

import logging
import os
import threading

from guestd import atomic
from guestd import group_protocol as gp

LOG = logging.getLogger(__name__)
# Why guestd refused an entry it could not write down.
UNWRITABLE = "outbox-unwritable"


class Outbox:
    """The outbox file at ``path``, of this guestd's ``epoch``."""

    def __init__(self, path: str, epoch: str | None = None) -> None:
        self.path = path
        # os.urandom, not secrets: secrets would bring hashlib into the guest image.
        self.epoch = gp.epoch_of(epoch or os.urandom(8).hex())
        self._seq = 0
        self._entries: list = []
        self._lock = threading.Lock()  # one writer at a time, and seq in file order

    def open(self) -> None:
        """Start the epoch with an empty outbox: no file (what a previous guestd left was
        of its own epoch, and its applications are gone). A failure is logged: the next
        append writes the file and is refused if it cannot."""
        with self._lock:
            try:
                self._write(self._entries)
            except OSError as exc:
                LOG.error("cannot write the outbox %s: %s", self.path, exc)
                return
        LOG.info("outbox in %s, epoch %s", self.path, self.epoch)

    def send(self, app: str, to: str, body: object) -> int:
        """Queue ``app``'s message for ``to`` (``"*"`` or a member); its seq.
        Raises :class:`group_protocol.Refused` (too large, outbox full, unwritable)."""
        gp.check_body(body)
        return self._append(lambda seq: gp.message_entry(seq, app, to, body))

    def status(self, app: str) -> int:
        """Queue ``app``'s group status query; its seq (the answer comes in a receipt)."""
        return self._append(lambda seq: gp.status_entry(seq, app))

    def _append(self, make) -> int:
        with self._lock:
            if len(self._entries) >= gp.MAX_OUTBOX:
                raise gp.Refused(gp.OUTBOX_FULL, f"{gp.MAX_OUTBOX} messages are waiting for "
                                                 "the host already")
            seq = self._seq + 1
            entries = [*self._entries, make(seq)]
            try:
                self._write(entries)
            except OSError as exc:
                LOG.error("cannot write the outbox %s: %s", self.path, exc)
                raise gp.Refused(UNWRITABLE, f"the outbox cannot be written: {exc}") from None
            self._seq, self._entries = seq, entries
            return seq

    def receipt(self, details: dict) -> list:
        """Take a receipt (:func:`group_protocol.parse_receipt`'s): drop the entries up to
        ``acked``; (application, result) for each result of an entry still held. A receipt
        of another epoch (a previous guestd's) changes nothing."""
        with self._lock:
            if details["epoch"] != self.epoch:
                LOG.info("receipt for epoch %s ignored: this outbox is of %s",
                         details["epoch"], self.epoch)
                return []
            apps = {entry["seq"]: entry["app"] for entry in self._entries}
            routed = [(apps[res["seq"]], res) for res in details["results"]
                      if res["seq"] in apps]
            kept = [entry for entry in self._entries if entry["seq"] > details["acked"]]
            if len(kept) != len(self._entries):
                self._entries = kept
                try:
                    self._write(kept)
                except OSError as exc:  # the host's position keeps it from taking them again
                    LOG.error("cannot write the outbox %s: %s", self.path, exc)
            return routed

    def __len__(self) -> int:
        return len(self._entries)

    def _write(self, entries: list) -> None:
        """The file for ``entries``; none when there are none."""
        if not entries:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        atomic.write(self.path, gp.outbox(self.epoch, entries), 0o600)
