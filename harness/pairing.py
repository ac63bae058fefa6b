"""A guest application that checks, as it hears them, that prepares and closings pair up.

Every notice of a recorded operation carries ``details["operation"]`` (issue 10):
an application pairs a prepare with its one closing (end or abort) by that key.
:class:`Pairing` is the pure check; :class:`PairingApp` is a real guestd client
that feeds it, for fault tests and soaks.

What counts as wrong (:meth:`Pairing.violations`): a second closing for one
operation, a closing for another event than its prepare, a second prepare for
one operation, and a prepare while another operation's prepare is still open
(the older must close first). A closing without a prepare is only counted
(:meth:`Pairing.unpaired_closings`): an abort may follow a prepare the guest never
got, and a confirm-resize end has no prepare at all. Prepares still open at the
end are reported by :meth:`Pairing.open_prepares` and fail :meth:`Pairing.assert_paired`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from guestd import protocol
from guestd.client import Application, Notice, Vote


@dataclass(frozen=True)
class Heard:
    """One notice as the checker keys it."""

    operation: str  # details["operation"], or an anonymous key per request id
    event: str
    phase: str
    request_id: str

    def __str__(self) -> str:
        return f"{self.event} {self.phase} of {self.operation} (request {self.request_id})"


class Pairing:
    """Pairs prepares with closings by operation id; safe to feed and query from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heard: list[Heard] = []
        self._prepared: dict[str, Heard] = {}
        self._open: dict[str, Heard] = {}  # in prepare order
        self._closed: dict[str, Heard] = {}  # the first closing of each operation
        self._violations: list[str] = []
        self._unpaired: list[Heard] = []
        self._anonymous: list[Heard] = []
        self._doubled = 0

    def hear(self, notice: Notice) -> None:
        """Feed one notice, in arrival order."""
        # guestd numbers each application's copy of a request: "<request id>.<n>".
        request_id = notice.id.rsplit(".", 1)[0]
        self.feed(notice.details.get("operation"), notice.event, notice.phase, request_id)

    def feed(self, operation: str | None, event: str, phase: str, request_id: str) -> None:
        """Feed one notice's key fields, in arrival order."""
        heard = Heard(operation or f"<none: {request_id}>", event, phase, request_id)
        with self._lock:
            self._heard.append(heard)
            if operation is None:
                self._anonymous.append(heard)
            if phase == protocol.PREPARE:
                self._prepare(heard)
            elif phase in (protocol.END, protocol.ABORT):
                self._close(heard)

    def _prepare(self, heard: Heard) -> None:
        if heard.operation in self._prepared:
            self._violations.append(f"second prepare: {heard}")
            return
        for older in self._open.values():
            self._violations.append(f"out of order: {heard} while {older} is still open")
        self._prepared[heard.operation] = self._open[heard.operation] = heard

    def _close(self, heard: Heard) -> None:
        first = self._closed.get(heard.operation)
        if first is not None:
            self._doubled += 1
            self._violations.append(f"doubled: {heard} after {first}")
            return
        self._closed[heard.operation] = heard
        prepare = self._open.pop(heard.operation, None)
        if prepare is None:
            self._unpaired.append(heard)
        elif prepare.event != heard.event:
            self._violations.append(f"wrong event: {heard} closes {prepare}")

    def heard(self) -> list[Heard]:
        with self._lock:
            return list(self._heard)

    def violations(self) -> list[str]:
        """Doubled closings, closings of another event, second prepares, prepares out of order."""
        with self._lock:
            return list(self._violations)

    def unpaired_closings(self) -> list[Heard]:
        """Closings with no prepare heard: counted, not wrong."""
        with self._lock:
            return list(self._unpaired)

    def anonymous(self) -> list[Heard]:
        """Notices without an operation id (each keyed by its request id)."""
        with self._lock:
            return list(self._anonymous)

    def open_prepares(self) -> list[Heard]:
        """Prepares with no closing yet, oldest first."""
        with self._lock:
            return list(self._open.values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            phases = [heard.phase for heard in self._heard]
            return {"votes": phases.count(protocol.VOTE),
                    "prepares": phases.count(protocol.PREPARE),
                    "ends": phases.count(protocol.END), "aborts": phases.count(protocol.ABORT),
                    "doubled": self._doubled, "unpaired_closings": len(self._unpaired),
                    "open": len(self._open), "anonymous": len(self._anonymous)}

    def assert_paired(self) -> None:
        """Raise AssertionError listing every violation and every prepare still open."""
        wrong = self.violations() + [f"open: {heard}" for heard in self.open_prepares()]
        if wrong:
            raise AssertionError("prepares and closings do not pair "
                                 f"({self.counts()}):\n  " + "\n  ".join(wrong))


class PairingApp:
    """A real guestd application on ``guest`` that feeds every notice it hears to a Pairing.

    ``verdict(notice) -> Vote`` answers votes (accept by default), e.g. random
    rejections in a soak. ``notices`` is every notice as heard.
    """

    def __init__(self, guest, name: str = "pairing",
                 verdict: Callable[[Notice], Vote] | None = None) -> None:
        self.pairing = Pairing()
        self.notices: list[Notice] = []
        self._lock = threading.Lock()  # notices arrive each on its own client thread
        self.verdict = verdict or (lambda notice: Vote.accept())
        self.app = Application(name, on_vote=self._vote, on_notice=self._hear,
                               socket_path=guest.guestd_socket).start()
        assert self.app.registered.wait(5), "application did not register with guestd"

    def _hear(self, notice: Notice) -> None:
        with self._lock:  # one order for both records
            self.notices.append(notice)
            self.pairing.hear(notice)

    def _vote(self, notice: Notice) -> Vote:
        self._hear(notice)
        return self.verdict(notice)

    def wait_closed(self, timeout: float = 10.0) -> Pairing:
        """The Pairing once no prepare is open, or when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while self.pairing.open_prepares() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pairing

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        """Everything heard, once ``count`` notices arrived or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while len(self.pairing.heard()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pairing.heard()

    def stop(self) -> None:
        self.app.stop()
