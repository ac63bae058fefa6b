import threading
import time

from guestd import protocol
from guestd.once import AtMostOnce


def req(rid="r1", instance="i1"):
    return protocol.request(rid, instance, "reboot", "prepare", 5.0)


class Handler:
    def __init__(self, delay=0.0):
        self.calls = []
        self.delay = delay

    def __call__(self, request):
        self.calls.append(request["id"])
        time.sleep(self.delay)
        return protocol.answer(request, protocol.ACCEPT, [])


def test_a_repeated_request_gets_the_first_answer_without_a_second_delivery():
    once, handle = AtMostOnce(), Handler()
    first = once.answer(req(), handle, wait=1)
    assert once.answer(req(), handle, wait=1) is first
    assert handle.calls == ["r1"]


def test_a_repeat_while_the_first_is_answered_waits_for_it():
    once, handle = AtMostOnce(), Handler(delay=0.3)
    answers = []
    first = threading.Thread(target=lambda: answers.append(once.answer(req(), handle, 1)))
    first.start()
    time.sleep(0.05)
    answers.append(once.answer(req(), handle, wait=2))
    first.join()
    assert handle.calls == ["r1"] and answers[0] is answers[1]


def test_a_repeat_that_cannot_wait_long_enough_is_an_error_never_a_second_delivery():
    once, handle = AtMostOnce(), Handler(delay=0.5)
    threading.Thread(target=lambda: once.answer(req(), handle, 1)).start()
    time.sleep(0.05)
    answer = once.answer(req(), handle, wait=0.05)
    assert answer["type"] == protocol.FAILURE and handle.calls == ["r1"]


def test_the_same_id_for_another_instance_is_another_request():
    once, handle = AtMostOnce(), Handler()
    once.answer(req(instance="i1"), handle, 1)
    once.answer(req(instance="i2"), handle, 1)
    assert handle.calls == ["r1", "r1"]


def test_memory_is_bounded_oldest_forgotten_first():
    once, handle = AtMostOnce(remembered=2), Handler()
    for rid in ("a", "b", "c"):
        once.answer(req(rid), handle, 1)
    once.answer(req("c"), handle, 1)  # remembered
    once.answer(req("a"), handle, 1)  # forgotten: answered afresh
    assert handle.calls == ["a", "b", "c", "a"]


def test_an_answer_not_kept_is_not_remembered_and_the_next_delivery_is_handled_afresh():
    once, handle = AtMostOnce(), Handler()
    nobody = once.answer(req(), handle, wait=1, keep=lambda answer: False)
    assert nobody["result"] == protocol.ACCEPT
    again = once.answer(req(), handle, wait=1, keep=lambda answer: True)
    assert once.answer(req(), handle, wait=1) is again
    assert handle.calls == ["r1", "r1"]
