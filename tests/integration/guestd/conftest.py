"""A guest whose guestd-ctl the tests run as the agent would."""

import pytest

from harness.guest import write_guestd_ctl


@pytest.fixture
def guest(make_guest, short_dir):
    guest = make_guest()
    guest.guestd_ctl_argv = write_guestd_ctl(f"{short_dir}/guestd-ctl")
    return guest
