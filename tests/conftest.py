"""Fixtures on real components: redis-server, qemu-ga + guestd guests, the Nova stack.

Expensive pieces (Redis, the Nova stack) start once per test session.
Unix socket paths must stay under 108 bytes, so work directories are short
ones under /tmp rather than pytest's deep tmp_path.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.guest import Guest  # noqa: E402
from harness.redis_server import RedisServer  # noqa: E402
from novaproxy import redis_schema  # noqa: E402


@pytest.fixture(scope="session")
def session_dir():
    path = tempfile.mkdtemp(prefix="np-")
    yield path
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
