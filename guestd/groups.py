"""The host's server-group requests (event ``group``), answered like votes and notices.

``message``: a message from another member of the group, handed to every application
registered for ``group`` (a ``group-message`` on its socket) and to every group hook,
then answered ``accept`` naming them (delivered). The host delivers at least once: the
dispatcher answers a repeated request id once (:mod:`guestd.once`), and a message the
sender's agent queued twice (another id, the same sender, epoch and seq) is answered
``reject`` without being handed out again. A message nobody takes yet (early in a boot)
is answered ``accept`` naming nobody and forgotten: the host delivers it again
(:func:`group_protocol.delivered`).

``receipt``: the host took entries of the outbox; :class:`guestd.outbox.Outbox` drops
them, and each result goes to the application that queued its entry.

``report``: a message this guest sent reached every recipient, or expired before some
did; the application that sent it gets a second result for its seq
(:func:`group_protocol.final_result`). guestd remembers which application sent which
accepted message (the last ``REMEMBERED``); a report for one it does not know (sent
before guestd restarted) is answered naming nobody, and the host drops it.

``peer``: another member's latest state (:mod:`guestd.peer_protocol`), handed out like
a message unless a notice of that peer with a higher seq was handed out already.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import TimeoutError as FutureTimeout

from guestd import group_protocol as gp
from guestd import hooks, peer_protocol, protocol
from guestd.dispatch import background, budget
from guestd.outbox import Outbox
from guestd.registry import Registry

LOG = logging.getLogger(__name__)
# Messages remembered by (sender, epoch, seq): far more than a recipient's queue holds.
REMEMBERED = 4096


class GroupRequests:
    """Answers group requests for the ``registry``'s applications, the hooks in
    ``hooks_dir`` and the ``outbox`` (None: this guestd sends nothing)."""

    def __init__(self, registry: Registry, outbox: Outbox | None,
                 hooks_dir: str | None) -> None:
        self._registry = registry
        self._outbox = outbox
        self._hooks_dir = hooks_dir
        self._seen: OrderedDict = OrderedDict()  # (from, epoch, seq) handed out
        self._peer_seqs: dict = {}  # peer -> the highest notice seq handed out
        self._senders: OrderedDict = OrderedDict()  # message id -> (application, seq)
        self._lock = threading.Lock()

    def handle(self, req: dict) -> dict:
        """The answer to one group request (an error for one that does not parse)."""
        try:
            if req["phase"] == protocol.MESSAGE:
                return self._message(req, gp.parse_message_details(req["details"]))
            if req["phase"] == protocol.RECEIPT:
                return self._receipt(req, gp.parse_receipt(req["details"]))
            if req["phase"] == protocol.REPORT:
                return self._report(req, gp.parse_report_details(req["details"]))
            if req["phase"] == protocol.PEER:
                return self._peer(req, peer_protocol.parse_peer_details(req["details"]))
            raise protocol.ProtocolError(f"unknown group phase {req['phase']!r:.40}")
        except protocol.ProtocolError as exc:
            LOG.warning("group %s %s refused: %s", req["phase"], req["id"], exc)
            return protocol.failure(str(exc))

    @staticmethod
    def _key(details: dict) -> tuple:
        return details["from"], details["epoch"], details["seq"]

    def _first(self, details: dict) -> bool:
        """Whether this message is seen for the first time (and remember it)."""
        key = self._key(details)
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = True
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            return True

    def _message(self, req: dict, details: dict) -> dict:
        if not self._first(details):
            LOG.info("group message %s from %s (seq %d) already delivered", details["id"],
                     details["from"], details["seq"])
            return protocol.answer(req, protocol.REJECT)
        voters = self._hand_out(req, gp.group_message(details), protocol.MESSAGE)
        if not voters:  # nobody takes group messages yet: the host delivers it again
            with self._lock:
                self._seen.pop(self._key(details), None)
            LOG.info("group message %s from %s (seq %d): nobody takes group messages yet; "
                     "the host delivers it again", details["id"], details["from"],
                     details["seq"])
        else:
            LOG.info("group message %s from %s (seq %d) delivered to %d", details["id"],
                     details["from"], details["seq"], len(voters))
        return protocol.answer(req, protocol.ACCEPT, voters)

    def _peer(self, req: dict, details: dict) -> dict:
        with self._lock:  # handed out in seq order per peer: a late, older one is stale
            stale = self._peer_seqs.get(details["peer"], 0) >= details["seq"]
            if not stale:
                self._peer_seqs[details["peer"]] = details["seq"]
        if stale:  # a newer state was handed out: this one counts as had
            LOG.info("peer notice %s seq %d is stale", details["peer"], details["seq"])
            return protocol.answer(req, protocol.REJECT)
        voters = self._hand_out(req, peer_protocol.peer_notice(details), protocol.PEER)
        if not voters:  # nobody takes it yet: the host tells it again
            with self._lock:
                if self._peer_seqs.get(details["peer"]) == details["seq"]:
                    del self._peer_seqs[details["peer"]]
        LOG.info("peer %s is %s (seq %d): told %d", details["peer"], details["state"],
                 details["seq"], len(voters))
        return protocol.answer(req, protocol.ACCEPT, voters)

    def _hand_out(self, req: dict, message: dict, phase: str) -> list:
        """Give ``message`` to the group hooks and the applications registered for
        ``group``, within the request's budget; a voter entry for each."""
        wait = budget(req)
        deadline = time.monotonic() + wait
        ran = [(os.path.basename(path), background(hooks.run_group, path, message, wait, phase))
               for path in hooks.discover(self._hooks_dir)]
        voters = [protocol.voter(name, protocol.ACCEPT if sent else protocol.ERROR,
                                 "" if sent else "disconnected")
                  for name, sent in self._registry.tell_all(protocol.GROUP, message)]
        for name, future in ran:
            try:
                voters.append(future.result(timeout=max(deadline - time.monotonic(), 0)))
            except FutureTimeout:
                voters.append(protocol.voter(name, protocol.TIMEOUT))
        return voters

    def _receipt(self, req: dict, details: dict) -> dict:
        if self._outbox is None:
            raise protocol.ProtocolError("this guestd keeps no outbox")
        routed = self._outbox.receipt(details)
        for app, result in routed:
            if result["status"] == gp.ACCEPTED and result.get("members"):
                self._remember_sender(result.get("message"), app, result["seq"])
            if not self._registry.tell(app, gp.group_result(result)):
                LOG.info("result of seq %d not told: application %s is gone", result["seq"],
                         app)
        LOG.info("receipt up to seq %d: %d results, %d entries left", details["acked"],
                 len(routed), len(self._outbox))
        return protocol.answer(req, protocol.ACCEPT)

    def _remember_sender(self, message_id: object, app: str, seq: int) -> None:
        if not isinstance(message_id, str):
            return
        with self._lock:
            self._senders[message_id] = (app, seq)
            while len(self._senders) > REMEMBERED:
                self._senders.popitem(last=False)

    def _report(self, req: dict, report: dict) -> dict:
        with self._lock:
            app, seq = self._senders.pop(report["message"], (None, 0))
        if app is None:
            LOG.info("report of message %s: not sent from here since guestd started",
                     report["message"])
            return protocol.answer(req, protocol.ACCEPT)
        result = gp.final_result(seq, report)
        told = self._registry.tell(app, gp.group_result(result))
        LOG.info("message %s (seq %d of %s): %s%s", report["message"], seq, app,
                 result["status"], "" if told else "; the application is gone")
        voters = [protocol.voter(app, protocol.ACCEPT)] if told else []
        return protocol.answer(req, protocol.ACCEPT, voters)
