"""guestd's directory watch on the real kernel inotify."""

import os
import time

import pytest

from guestd import inotify


@pytest.fixture
def watched(tmp_path):
    watch = inotify.DirectoryWatch(str(tmp_path))
    yield tmp_path, watch
    watch.close()


def test_quiet_directory_waits_out_its_timeout(watched):
    _, watch = watched
    started = time.monotonic()
    assert watch.wait(0.2) is False
    assert time.monotonic() - started >= 0.19


def test_a_file_written_and_closed_wakes_it(watched):
    path, watch = watched
    with open(path / "r1.req", "wb") as f:
        assert watch.wait(1.0) is True  # created
        f.write(b"{}\n")
    assert watch.wait(1.0) is True  # closed after writing
    assert watch.wait(0.05) is False  # every event was read: nothing left


def test_a_file_moved_in_wakes_it(watched, tmp_path_factory):
    path, watch = watched
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "r2.req"
    elsewhere.write_bytes(b"{}\n")
    os.rename(elsewhere, path / "r2.req")
    assert watch.wait(1.0) is True


def test_removed_directory_ends_the_watch(tmp_path):
    directory = tmp_path / "spool"
    directory.mkdir()
    watch = inotify.DirectoryWatch(str(directory))
    directory.rmdir()
    assert watch.wait(1.0) is False and watch.alive is False
    watch.close()


def test_what_cannot_be_watched_is_unavailable(tmp_path):
    with pytest.raises(inotify.Unavailable, match="No such file"):
        inotify.DirectoryWatch(str(tmp_path / "missing"))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(inotify.Unavailable, match="Not a directory"):
        inotify.DirectoryWatch(str(tmp_path / "file"))
