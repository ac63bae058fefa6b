"""The harness's host-process guests (harness/guest.py) on real qemu-ga and guestd.

Their qemu-ga runs on the test machine itself, as root in CI: it must refuse
what a real guest allows for libvirt and Nova but would act on this machine,
and a fault asked of a guest that cannot play it must fail loudly.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from harness.guest import HOST_UNSAFE, REPO, GuestNotRunning
from novaproxy.agent.guest_agent import CommandFailed, GuestAgentTimeout
from novaproxy.agent.qga_socket import SocketGuestAgent

# What the tests call on host-process guests (novaproxy-agent's own commands).
NEEDED = {"guest-ping", "guest-sync", "guest-sync-delimited", "guest-info", "guest-exec",
          "guest-exec-status", "guest-file-open", "guest-file-read", "guest-file-write",
          "guest-file-close"}


def image_allowed() -> set[str]:
    """What a novaproxy guest image's qemu-ga allows (deploy/image/make-qga-config.py)."""
    spec = importlib.util.spec_from_file_location(
        "make_qga_config", os.path.join(REPO, "deploy", "image", "make-qga-config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.allowed())


@pytest.fixture
def agent(make_guest):
    client = SocketGuestAgent(make_guest().qga_socket)
    yield client
    client.close()


def enabled_commands(agent) -> dict[str, bool]:
    info = agent.execute("guest-info", timeout=5)
    return {c["name"]: c["enabled"] for c in info["supported_commands"]}


def test_only_the_image_allowed_commands_that_are_safe_on_a_host_are_enabled(agent):
    enabled = {name for name, on in enabled_commands(agent).items() if on}
    assert enabled == image_allowed() - HOST_UNSAFE
    assert NEEDED <= enabled
    assert {"guest-shutdown", "guest-set-vcpus", "guest-set-time", "guest-fsfreeze-freeze",
            "guest-suspend-ram", "guest-set-user-password"}.isdisjoint(enabled)


@pytest.mark.parametrize("command, arguments", [
    ("guest-shutdown", {"mode": "powerdown"}),
    ("guest-set-vcpus", {"vcpus": [{"logical-id": 1, "online": False}]}),
])
def test_a_host_process_guest_refuses_what_would_act_on_this_machine(agent, command,
                                                                      arguments):
    # Asked only once guest-info shows it disabled: were the block list missing,
    # the call would power off or unplug a CPU of the machine running the tests.
    assert enabled_commands(agent)[command] is False
    with pytest.raises(CommandFailed) as refused:
        agent.execute(command, arguments, timeout=5)
    assert refused.value.error_class == "CommandNotFound"
    assert refused.value.desc == f"Command {command} has been disabled"
    assert agent.execute("guest-ping", timeout=5) == {}


def test_hang_stops_qemu_ga_until_unhang(make_guest):
    guest = make_guest()
    client = SocketGuestAgent(guest.qga_socket)
    try:
        guest.hang()
        with pytest.raises(GuestAgentTimeout):
            client.execute("guest-ping", timeout=1)
        guest.unhang()
        assert client.execute("guest-ping", timeout=5) == {}
    finally:
        client.close()


@pytest.mark.parametrize("play", ["power_off", "freeze"])
def test_hang_refuses_a_guest_that_is_not_running(make_guest, play):
    guest = make_guest()
    getattr(guest, play)()
    with pytest.raises(GuestNotRunning, match="cannot hang guest .*: it is (off|frozen)"):
        guest.hang()

