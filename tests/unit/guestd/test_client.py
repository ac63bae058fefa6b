import pytest

from guestd.client import Notice


def notice(event, phase, details):
    return Notice("n1", "vm-a", event, phase, 5.0, details)


def test_a_scale_downs_details_read_as_vcpus():
    prepare = notice("scale-down", "prepare", {"online": [0, 1, 2, 3], "target": 2,
                                               "offline": [3, 2]})
    assert (prepare.online, prepare.target, prepare.offline, prepare.added) == (
        (0, 1, 2, 3), 2, (3, 2), ())
    end = notice("scale-down", "end", {"online": [0, 1], "offline": [3, 2]})
    assert (end.online, end.target, end.offline) == ((0, 1), None, (3, 2))


def test_a_scale_ups_end_says_what_came_back():
    end = notice("scale-up", "end", {"online": [0, 1, 2], "added": [2]})
    assert (end.online, end.added, end.offline) == ((0, 1, 2), (2,), ())


@pytest.mark.parametrize("details", [{}, {"type": "SOFT"},
                                     {"online": "0-3", "target": True, "offline": [None]}])
def test_other_notices_have_no_vcpus(details):
    other = notice("reboot", "prepare", details)
    assert (other.online, other.target, other.offline, other.added) == ((), None, (), ())
