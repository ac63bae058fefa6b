"""Fixtures of the fault tier: a stack of its own whose Redis and Nova can be failed.

The system tier's ``stack`` is shared by the whole session, and a fault test
restarts Redis, freezes it, or makes Nova fail: so the fault tier starts its own
stack (one compute host), with novaproxy-api reaching Nova through a
:class:`harness.fault_proxy.FaultProxy` (``fault_stack.nova_faults``). Its Redis
is ``fault_stack.redis`` (:class:`harness.redis_server.RedisServer`: ``kill()``,
``freeze()``, ``restart(keep_data)``...). After each test the ``fault_stack``
fixture puts the faults right again: Redis running and thawed (started empty
if a test left it down), the fault proxy passing, every agent process alive,
the test's servers deleted. It does not repair what the code under test should
repair by itself (an agent's Redis state, for one).
"""

from __future__ import annotations

import configparser
import os
import uuid

import pytest

from harness import fault_proxy
from harness.fault_proxy import FaultProxy
from harness.stack import Stack

# The vote deadline of the tier's negotiated flavor: short, so that a fault that
# turns into a timeout costs seconds, and long enough for a loaded machine.
VOTE_TIMEOUT = 4.0


class FaultStack(Stack):
    """A :class:`Stack` whose novaproxy-api reaches Nova through a fault proxy."""

    def __init__(self, workdir: str, **kwargs) -> None:
        self.nova_faults: FaultProxy | None = None
        super().__init__(workdir, **kwargs)

    def write_paste(self, path: str, **negotiation) -> None:
        """The stack's paste file, with the fault proxy as the forward app's upstream."""
        if self.nova_faults is None:  # Nova is up by the time the paste is written
            self.nova_faults = FaultProxy(self.nova_url)
        super().write_paste(path, **negotiation)
        paste = configparser.ConfigParser(interpolation=None)
        paste.read(path)
        paste["app:forward"]["upstream"] = self.nova_faults.url
        with open(path, "w") as f:
            paste.write(f)

    def stop(self) -> None:
        super().stop()
        if self.nova_faults is not None:
            self.nova_faults.stop()


def restore(stack: FaultStack) -> None:
    """Undo the faults a test left behind (not their effects on the code under test)."""
    stack.nova_faults.set(fault_proxy.PASS)
    if stack.redis.frozen:
        stack.redis.thaw()
    if not stack.redis.running:
        stack.redis.start(keep_data=False)
    for host, agent in list(stack.agents.items()):
        if not agent.alive():
            stack.restart_agent(host)


@pytest.fixture(scope="session")
def _fault_stack(session_dir):
    stack = FaultStack(os.path.join(session_dir, "faults"), computes=("fault1",))
    yield stack
    stack.stop()


@pytest.fixture
def fault_stack(_fault_stack):
    """The fault tier's stack; faults undone and the test's servers deleted after the test."""
    mark = len(_fault_stack.booted)
    yield _fault_stack
    restore(_fault_stack)
    _fault_stack.cleanup(keep=mark)


@pytest.fixture(scope="session")
def fault_flavor(_fault_stack):
    """Negotiated, with the tier's short vote deadline."""
    return _fault_stack.flavor(f"faults-{uuid.uuid4().hex[:6]}", {
        "guest:negotiation": "true", "guest:vote_timeout": str(VOTE_TIMEOUT)})
