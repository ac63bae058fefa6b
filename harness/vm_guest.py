"""A vm-tier guest as the tests reach it: through its qemu-ga, with the agent's own
libvirt client (the same calls the agent makes), never through a network.

:func:`answering` waits for a freshly started domain until its agent channel is
connected and qemu-ga answers a ping; :class:`VMGuest` runs shell commands in it
(``guest-exec``), starts long ones in the background and reads its files
(``guest-file-*``).
"""

from __future__ import annotations

import base64
import json

from harness.processes import wait_for
from novaproxy import redis_schema
from novaproxy.agent import guest_agent, probe

# A TCG guest on a busy 2-core machine: boot to agent is ~5-15 s; allow for worse.
BOOT_TIMEOUT = 90.0
VM_HOST = "vmhost"  # the one compute of the vm tier's stack (tests/vm/conftest.py)


def answering(session, hv, instance: str, domain, timeout: float):
    """The agent client of ``domain`` (started on ``session``) once it answers a
    guest-ping; an AssertionError with the guest's console when it does not in time."""
    try:
        wait_for(lambda: session.agent_connected(domain), timeout,
                 f"the guest agent channel of {instance}", interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; console:\n{session.console(domain.name())}") from None
    agent = hv.agent(instance)
    wait_for(lambda: probe.ping(agent, 2.0) is None, 30, f"guest-ping of {instance}",
             interval=0.1)
    return agent


class VMGuest:
    """One booted guest: its Nova UUID, its libvirt domain and its agent client."""

    def __init__(self, instance: str, domain, agent) -> None:
        self.id = instance
        self.domain = domain
        self.agent = agent

    def run(self, script: str, *args: str, timeout: float = 10.0) -> str:
        """``/bin/sh -c script args...`` in the guest (guest-exec); must exit 0; its stdout."""
        code, out = guest_agent.guest_exec(self.agent, ["/bin/sh", "-c", script, "sh", *args],
                                           b"", timeout)
        assert code == 0, f"{script!r} exited {code}: {out!r}"
        return out.decode(errors="replace")

    def spawn(self, *argv: str, log: str = "/dev/null") -> None:
        """Start ``argv`` in the background (its output to ``log``) and return at once:
        no guest-exec-status polling competes with the agent for qemu-ga meanwhile."""
        self.run('log=$1; shift; "$@" </dev/null >"$log" 2>&1 &', log, *argv)

    def read(self, path: str) -> str:
        """A guest file through guest-file-open/read/close ("" when it does not exist)."""
        try:
            handle = self.agent.execute("guest-file-open", {"path": path, "mode": "r"}, 5)
        except guest_agent.CommandFailed:
            return ""
        try:
            result = self.agent.execute("guest-file-read",
                                        {"handle": handle, "count": 65536}, 5)
        finally:
            self.agent.execute("guest-file-close", {"handle": handle}, 5)
        return base64.b64decode(result["buf-b64"]).decode()

    def read_json(self, path: str, timeout: float, what: str):
        """The JSON a guest program writes (atomically) to ``path``, once it is there;
        read once a second, so that waiting costs the guest's qemu-ga next to nothing."""
        return wait_for(lambda: json.loads(self.read(path) or "null"), timeout, what,
                        interval=1.0)


def boot_server(stack, session, hv, flavor, name: str, timeout: float = BOOT_TIMEOUT,
                **domain_args) -> tuple:
    """A Nova server on ``VM_HOST`` (the fixture's fake driver) and a libvirt domain with
    its UUID started on ``session`` (``domain_args``: :meth:`LibvirtSession.boot`'s), so
    that the proxy and the agent act on a real guest as in production; ``(server,
    domain, agent client)`` once its qemu-ga answers and the agent routes to it. The
    caller destroys the domain (this does, if the guest never answers) and deletes the
    server (``stack.cleanup``)."""
    server, host = stack.boot(name, flavor, with_guest=False)
    assert host == VM_HOST, host
    domain = session.boot(server.id, **domain_args)
    try:
        agent = answering(session, hv, server.id, domain, timeout)
        client = redis_schema.connect(stack.redis.url)
        try:
            wait_for(lambda: redis_schema.route_of(client, server.id) == VM_HOST, 10,
                     f"the agent's route to {server.id}")
        finally:
            client.close()
    except BaseException:
        session.destroy(domain)
        raise
    return server, domain, agent
