"""An agent of the test process on libvirt's ``test:///default`` driver, for one host of
the stack: the lifecycle events that driver emits (a crash, a pause, a stop) reach the
agent's parts as libvirt's events of a real host would, against the stack's real Nova
and Redis. The stack's own agent for that host serves qemu-ga processes, which have no
lifecycle events; a test:///default domain carries the UUID of a server the stack
booted without a guest (``stack.boot(..., with_guest=False)``).
"""

from __future__ import annotations

import threading

from harness.stack import ADMIN_TOKEN
from novaproxy import redis_schema
from novaproxy.agent import config as agent_config
from novaproxy.agent import hypervisor, lifecycle_events, service
from novaproxy.agent import nova as nova_client

URI = "test:///default"


def agent(stack, host: str, workdir, monitoring: str = "") -> service.Agent:
    """The agent (not running: start the threads the test needs), ``monitoring``: the
    lines of its ``[monitoring]`` section. Its ``stopping`` event ends its threads."""
    path = workdir / "agent.ini"
    path.write_text(f"[agent]\nhost = {host}\nredis_url = {stack.redis.url}\n"
                    f"hypervisor = libvirt\nlibvirt_uri = {URI}\n"
                    f"[monitoring]\n{monitoring}")
    config = agent_config.load(str(path))
    nova = nova_client.from_section({"auth_type": "admin_token", "token": ADMIN_TOKEN,
                                     "endpoint": f"{stack.nova_url}/v2.1"})
    return service.Agent(config, hypervisor.Libvirt(URI),
                         redis_schema.connect(stack.redis.url), nova)


def listen(agent_: service.Agent) -> None:
    """Hand the driver's lifecycle events to ``agent_`` from now on, until it stops."""
    events = lifecycle_events.LibvirtEvents(URI, agent_.on_domain_event, agent_.stopping)
    threading.Thread(target=events.run, daemon=True).start()
    assert events.listening.wait(5), "libvirt's event loop did not start"
