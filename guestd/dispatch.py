"""One host request, handed to every application and hook that takes part, and the
guest's answer: the same whether guestd-ctl relayed it or the spool held it.

Every wait is bounded by the request's own timeout, less :data:`REPLY_MARGIN` for the
answer's way out of the guest; whoever misses it counts as ``timeout``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from guestd import group_protocol as gp
from guestd import hooks, once, protocol, votes
from guestd.registry import Registry

LOG = logging.getLogger(__name__)
# Time kept back from a request's timeout to carry the answer out of the guest.
REPLY_MARGIN = 0.1


def background(fn, *args) -> Future:
    """``fn(*args)`` in a thread of its own; its Future."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits for it
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def budget(req: dict) -> float:
    """How long answering ``req`` may take: its timeout, less the answer's way out."""
    return max(req["timeout"] - REPLY_MARGIN, 0.05)


def _remembered(answer: dict) -> bool:
    """A group message or peer notice nobody took (no application or hook yet) is not
    remembered, so that the host's next delivery of it is handed out
    (:func:`group_protocol.delivered`)."""
    return answer.get("phase") not in (protocol.MESSAGE, protocol.PEER) or gp.delivered(
        answer["result"], answer["voters"])


class Dispatcher:
    """Asks the ``registry``'s applications and the vote hooks in ``hooks_dir``;
    ``group`` answers the requests of server-group messaging (:mod:`guestd.groups`)."""

    def __init__(self, registry: Registry, hooks_dir: str | None,
                 group: Callable[[dict], dict]) -> None:
        self._registry = registry
        self._hooks_dir = hooks_dir
        self._group = group
        self._once = once.AtMostOnce()

    def handle(self, req: dict) -> dict:
        """The answer to ``req``; its applications and hooks hear it once, however often
        the host delivers it (a repeat gets the first answer)."""
        if req["event"] == protocol.GROUP:
            return self._once.answer(req, self._group, budget(req), _remembered)
        return self._once.answer(req, self._deliver, budget(req))

    def _deliver(self, req: dict) -> dict:
        """Hand ``req`` to every interested application and hook; return the answer."""
        wait = budget(req)
        deadline = time.monotonic() + wait
        asked = self._registry.ask(req)
        asked += [(os.path.basename(path), background(hooks.run, path, req, wait))
                  for path in hooks.discover(self._hooks_dir)]
        voters = []
        for name, future in asked:
            try:
                outcome = future.result(timeout=max(deadline - time.monotonic(), 0))
            except FutureTimeout:
                LOG.warning("application %s missed its %.1fs deadline for %s %s", name, wait,
                            req["event"], req["phase"])
                outcome = protocol.voter(name, protocol.TIMEOUT)
            voters.append(outcome)
        if req["phase"] == protocol.VOTE:
            result = votes.tally(voters, req["silence"])
            LOG.info("vote on %s for %s: %s (%s)", req["event"], req["instance"], result,
                     "; ".join(f"{v['name']}={v['vote']}" for v in voters) or "nobody asked")
        else:
            result = protocol.ACCEPT
            LOG.info("%s notice of %s for %s delivered to %d", req["phase"], req["event"],
                     req["instance"], len(voters))
        # Tallied over all; the answer lists those that decided first, as many as it may.
        return protocol.answer(req, result, votes.ranked(voters, req["silence"]))
