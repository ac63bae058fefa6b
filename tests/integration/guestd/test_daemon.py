"""guestd as a whole: the order its parts start in, and its stop."""

import os
import threading

from guestd import daemon


def test_once_its_socket_answers_the_status_file_and_spool_are_there(make_guest):
    """Whoever waits for guestd's socket (the harness, the image's /init before it
    starts qemu-ga) may use the spool at once: guestd makes its socket last."""
    for _ in range(10):
        guest = make_guest()  # returns as soon as the socket accepts a connection
        assert os.path.isdir(guest.spool_dir) and os.path.isfile(guest.status_file)


def test_a_stopped_guestd_removes_its_socket(short_dir):
    path = f"{short_dir}/stopping.sock"
    server = daemon.Guestd(path, None)
    ready = threading.Event()
    thread = threading.Thread(target=server.serve, args=(ready,), daemon=True)
    thread.start()
    assert ready.wait(5) and os.path.exists(path)
    server.stop()
    thread.join(5)
    assert not os.path.exists(path)
