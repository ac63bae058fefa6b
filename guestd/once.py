"""Each host request reaches the applications at most once.

The host may deliver one request twice: an agent that restarts mid-request
takes it up again from Redis and writes it to the spool anew, and guest-exec
may follow a spool attempt. An application that already ran its prepare must
not run it again, so guestd remembers the answer of every recent request id
(with its instance) and gives a repeated delivery the first answer — waiting
for it while the first is still being answered. Pure but for a lock: the
caller supplies how to answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from guestd import protocol

# Requests remembered; a request repeated after this many others is answered afresh
# (the host never repeats one that late: its deadline is minutes at most).
REMEMBERED = 1024


class AtMostOnce:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._answers: OrderedDict = OrderedDict()  # (id, instance) -> Future of the answer
        self._remembered = remembered
        self._lock = threading.Lock()

    def answer(self, req: dict, handle, wait: float,
               keep: Callable[[dict], bool] = lambda answer: True) -> dict:
        """``handle(req)`` the first time ``req`` is seen; after that, its first answer
        (waited for at most ``wait`` seconds while it is still being worked out). An
        answer ``keep`` declines is not remembered: the request's next delivery is
        handled afresh (a group message nobody in the guest took yet)."""
        key = (req["id"], req["instance"])
        with self._lock:
            future = self._answers.get(key)
            first = future is None
            if first:
                future = self._answers[key] = Future()
                while len(self._answers) > self._remembered:
                    self._answers.popitem(last=False)
        if first:
            try:
                answer = handle(req)
            except BaseException as exc:
                future.set_exception(exc)
                raise
            future.set_result(answer)
            if not keep(answer):
                with self._lock:
                    if self._answers.get(key) is future:
                        del self._answers[key]
            return answer
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            return protocol.failure(f"request {req['id']} is already being answered; "
                                    "not delivered again")
