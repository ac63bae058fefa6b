"""Fixtures on real components: redis-server, qemu-ga + guestd guests, the Nova stack.

Expensive pieces (Redis, the Nova stack) start once per test session. The
repository's root is on ``sys.path`` (pyproject's ``pythonpath``), so tests import
``harness`` and each other's modules (``tests.system.helpers``) by package name.
Unix socket paths must stay under 108 bytes, so work directories are short
ones under /tmp rather than pytest's deep tmp_path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

from harness.guest import Guest
from harness.redis_server import RedisServer
from novaproxy import redis_schema


@pytest.fixture(scope="session")
def session_dir():
    path = tempfile.mkdtemp(prefix="np-")
    yield path
    if os.environ.get("NOVAPROXY_KEEP_LOGS"):  # every process's log, for a failed run
        print(f"\nlogs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="np-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(session_dir):
    server = RedisServer(os.path.join(session_dir, "redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_schema.connect(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_guest(short_dir):
    """Start guests (qemu-ga + guestd) whose sockets live in ``<short_dir>/sockets``."""
    guests = []
    socket_dir = os.path.join(short_dir, "sockets")
    os.makedirs(socket_dir, exist_ok=True)

    def make(instance: str | None = None) -> Guest:
        instance = instance or str(uuid.uuid4())
        guest = Guest(instance, socket_dir, os.path.join(short_dir, instance[:8]))
        guests.append(guest)
        return guest

    make.socket_dir = socket_dir
    yield make
    for guest in guests:
        guest.stop()


@pytest.fixture(scope="session")
def stack(session_dir):
    from harness.stack import Stack

    stack = Stack(os.path.join(session_dir, "stack"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def in_process(session_dir):
    """A second Nova stack with the negotiation filter inside nova-api's own pipeline."""
    from harness.stack import Stack

    stack = Stack(os.path.join(session_dir, "in-process"), in_process=True)
    yield stack
    stack.stop()


@pytest.fixture
def behind_auth_token(stack, session_dir):
    """The stack's standalone pipeline behind keystonemiddleware's auth_token (WebTest)."""
    from harness.auth_token import behind_auth_token

    with behind_auth_token(stack, session_dir) as app:
        yield app


class Recorder:
    """A guest application (real guestd client) that records every phase it sees."""

    def __init__(self, guest, name="recorder", verdict=None):
        from guestd.client import Application, Vote

        self.seen = []
        self.heard_at = []  # time.monotonic() of each, in the same order
        self.verdict = verdict or (lambda notice: Vote.accept())
        self.app = Application(name, on_vote=self._vote, on_notice=self._notice,
                               socket_path=guest.guestd_socket).start()
        assert self.app.registered.wait(5), "application did not register with guestd"

    def _vote(self, notice):
        self._heard(notice)
        return self.verdict(notice)

    def _notice(self, notice):
        self._heard(notice)

    def _heard(self, notice):
        import time

        self.heard_at.append(time.monotonic())
        self.seen.append((notice.event, notice.phase))

    def wait_for(self, count, timeout=10.0):
        import time

        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.seen


@pytest.fixture(scope="session")
def negotiated_flavor(stack):
    return stack.flavor(f"negotiated-{uuid.uuid4().hex[:6]}", {"guest:negotiation": "true"})


@pytest.fixture(scope="session")
def plain_flavor(stack):
    return stack.flavor(f"plain-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def recorder():
    apps = []

    def make(guest, **kwargs):
        rec = Recorder(guest, **kwargs)
        apps.append(rec)
        return rec

    yield make
    for rec in apps:
        rec.app.stop()


@pytest.fixture(autouse=True)
def _delete_servers_after_each_test(request):
    """Each test's servers and guests go when it ends, so Nova stays small and quick."""
    stacks = [request.getfixturevalue(name) for name in ("stack", "in_process")
              if name in request.fixturenames]
    marks = [len(stack.booted) for stack in stacks]  # servers of wider fixtures stay
    yield
    for stack, mark in zip(stacks, marks):
        stack.cleanup(keep=mark)
