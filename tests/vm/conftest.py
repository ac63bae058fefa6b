"""The vm tier: real TCG guests under a session-mode libvirtd.

The guest image (deploy/guest-image/build.sh) is built once and cached in
.cache/guest-image; libvirtd runs once per test session as ``nobody``. The tier
skips, with the reason, only when libvirt/QEMU is not installed or libvirtd
cannot start here; a guest that fails to boot or answer is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import pytest

from harness import libvirt_session
from harness.processes import wait_for
from harness.stack import Stack
from harness.vm_guest import BOOT_TIMEOUT, VM_HOST

# Until the first answer: a TCG boot under load must never count as a silent guest.
BOOT_GRACE = 120


@pytest.fixture(scope="session")
def vm_report(request):
    """Write a line of timings to the terminal, also when output is captured."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")

    def report(line: str) -> None:
        if capture is None or reporter is None:
            print(f"[vm] {line}")
            return
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(f"[vm] {line}")

    return report


@pytest.fixture(scope="session")
def guest_image(vm_report):
    """``(kernel, initrd)`` of the guest image, built or taken from the cache."""
    if os.geteuid() != 0:
        pytest.skip("the vm tier builds its guest image and runs libvirtd as another user: "
                    "needs root")
    try:
        libvirt_session.check_available()
    except libvirt_session.Unavailable as exc:
        pytest.skip(f"libvirt/QEMU unavailable: {exc}")
    started = time.monotonic()
    image = libvirt_session.build_image()
    vm_report(f"guest image ready in {time.monotonic() - started:.1f}s: initrd "
              f"{os.path.getsize(image[1]) / 2**20:.1f} MiB, kernel "
              f"{os.path.getsize(image[0]) / 2**20:.1f} MiB")
    return image


@pytest.fixture(scope="session")
def libvirt_vm(guest_image, vm_report):
    """A session libvirtd (as ``nobody``) ready to boot guests; stopped at the end."""
    # QEMU outlives its test run: on SIGTERM (a CI timeout) unwind like Ctrl-C, so
    # that the teardowns destroy the guests and stop libvirtd.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = time.monotonic()
        try:
            session = libvirt_session.LibvirtSession(*guest_image)
        except libvirt_session.Unavailable as exc:
            pytest.skip(f"session libvirtd cannot start here: {exc}")
        vm_report(f"session libvirtd up in {time.monotonic() - started:.2f}s: {session.uri}")
        try:
            yield session
        finally:
            session.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def vm_stack(libvirt_vm, vm_report):
    """Redis, the Nova fixture with one compute (``VM_HOST``), its agent in libvirt mode,
    the proxy: each module's own."""
    workdir = tempfile.mkdtemp(prefix="np-vms-")
    started = time.monotonic()
    stack = Stack(workdir, computes=(VM_HOST,), libvirt={VM_HOST: libvirt_vm.uri},
                  monitoring={"boot_grace": BOOT_GRACE})
    vm_report(f"stack up in {time.monotonic() - started:.1f}s (Nova, Redis, proxy, "
              f"agent for {VM_HOST} in libvirt mode)")
    try:
        yield stack
    finally:
        stack.stop()
        if os.environ.get("NOVAPROXY_KEEP_LOGS"):
            print(f"\nstack logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


class Booted:
    """A booted guest: its domain and how long it took to answer."""

    def __init__(self, session, instance: str, domain, created: float) -> None:
        self.session, self.instance, self.domain = session, instance, domain
        self.name = domain.name()
        self.created = created  # time.monotonic() just before define + create
        self.connected = 0.0  # seconds from create to libvirt's agent-connected state

    def console(self) -> str:
        return self.session.console(self.name)


@pytest.fixture
def boot_guest(libvirt_vm):
    """Boot guests that are destroyed and undefined when the test ends, whatever happens."""
    booted = []

    def boot(instance: str, **kwargs) -> Booted:
        created = time.monotonic()
        domain = libvirt_vm.boot(instance, **kwargs)
        guest = Booted(libvirt_vm, instance, domain, created)
        booted.append(guest)
        try:
            wait_for(lambda: libvirt_vm.agent_connected(domain), BOOT_TIMEOUT,
                     f"guest agent of {instance}", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; console:\n{guest.console()}") from None
        guest.connected = time.monotonic() - created
        return guest

    yield boot
    for guest in booted:
        libvirt_vm.destroy(guest.domain)
