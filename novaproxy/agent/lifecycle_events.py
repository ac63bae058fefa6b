"""libvirt's domain events: the black-box signal, and a prompt for end notices.

:func:`meaning` (pure) says what a lifecycle event means for the monitor: the
guest died (QEMU crashed or failed, guest panic, watchdog, I/O error), the
guest is now expected to be silent (paused, shut down, migrating away), or it
runs again. :class:`LibvirtEvents` listens on its own libvirt connection (with
keepalive, reconnecting after libvirtd restarts) and hands each event over, and
each opening or closing of the guest agent's channel.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

LOG = logging.getLogger("novaproxy.agent.events")

# virDomainEventType and its details (libvirt's stable ABI numbers), so that this
# module's logic needs no libvirt to be tested.
DEFINED, UNDEFINED, STARTED, SUSPENDED, RESUMED, STOPPED, SHUTDOWN, PMSUSPENDED, CRASHED = (
    range(9))
_NAMES = ("DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED", "SHUTDOWN",
          "PMSUSPENDED", "CRASHED")
_DETAILS = {
    DEFINED: ("ADDED", "UPDATED", "RENAMED", "FROM_SNAPSHOT"),
    UNDEFINED: ("REMOVED", "RENAMED"),
    SHUTDOWN: ("FINISHED", "GUEST", "HOST"),
    PMSUSPENDED: ("MEMORY", "DISK"),
    SUSPENDED: ("PAUSED", "MIGRATED", "IOERROR", "WATCHDOG", "RESTORED", "FROM_SNAPSHOT",
                "API_ERROR", "POSTCOPY", "POSTCOPY_FAILED"),
    STOPPED: ("SHUTDOWN", "DESTROYED", "CRASHED", "MIGRATED", "SAVED", "FAILED",
              "FROM_SNAPSHOT"),
    CRASHED: ("PANICKED", "CRASHLOADED"),
    STARTED: ("BOOTED", "MIGRATED", "RESTORED", "FROM_SNAPSHOT", "WAKEUP"),
    RESUMED: ("UNPAUSED", "MIGRATED", "FROM_SNAPSHOT", "POSTCOPY", "POSTCOPY_FAILED"),
}
# Events that mean the guest is dead or stuck for good, whatever Nova thinks.
_FATAL = {(STOPPED, 2), (STOPPED, 5), (CRASHED, 0), (CRASHED, 1), (SUSPENDED, 2),
          (SUSPENDED, 3), (SUSPENDED, 6), (SUSPENDED, 8)}


@dataclass(frozen=True)
class Meaning:
    name: str  # e.g. STOPPED_FAILED, as Masakari's vir_domain_event spells it
    fatal: bool  # the guest died or froze for good: a failure at once
    silence: str | None  # why the guest is expected silent now; "" if it runs; None: no change
    domains_changed: bool  # a domain came or went here: routes need a refresh


def event_name(event: int, detail: int) -> str:
    head = _NAMES[event] if 0 <= event < len(_NAMES) else f"EVENT{event}"
    details = _DETAILS.get(event, ())
    tail = details[detail] if 0 <= detail < len(details) else str(detail)
    return f"{head}_{tail}"


def meaning(event: int, detail: int) -> Meaning:
    name = event_name(event, detail)
    if (event, detail) in _FATAL:
        return Meaning(name, True, None, False)
    if event in (STARTED, RESUMED):
        return Meaning(name, False, "", event == STARTED)
    if event == SUSPENDED:
        return Meaning(name, False, f"libvirt: {name.lower()}", False)
    if event in (STOPPED, SHUTDOWN, PMSUSPENDED):
        return Meaning(name, False, f"libvirt: {name.lower()}", event == STOPPED)
    return Meaning(name, False, None, event in (DEFINED, UNDEFINED))


# virConnectDomainEventAgentLifecycleReason
_AGENT_REASONS = ("unknown reason", "the domain started", "the guest opened or closed the channel")


def agent_reason(reason: int) -> str:
    return _AGENT_REASONS[reason] if 0 <= reason < len(_AGENT_REASONS) else f"reason {reason}"


class LibvirtEvents:
    """Lifecycle events from ``uri`` to ``handler(instance, Meaning)``, guest-agent
    channel events to ``on_agent(instance, connected, why)``."""

    def __init__(self, uri: str, handler, stopping: threading.Event, on_agent=None) -> None:
        import libvirt

        self._libvirt = libvirt
        self.uri = uri
        self.handler = handler
        self.on_agent = on_agent
        self.stopping = stopping
        self._closed = threading.Event()
        self.listening = threading.Event()  # set while events are being received
        _start_event_loop(libvirt)

    def run(self) -> None:
        """Listen until the agent stops, reconnecting (every 5 s) when libvirt goes away."""
        while not self.stopping.is_set():
            try:
                conn = self._connect()
            except self._libvirt.libvirtError as exc:
                LOG.warning("cannot listen to libvirt events at %s: %s; retrying in 5 s",
                            self.uri, exc)
                self.stopping.wait(5.0)
                continue
            LOG.info("listening to libvirt events at %s", self.uri)
            self.listening.set()
            while not self.stopping.is_set() and not self._closed.wait(1.0):
                pass
            self.listening.clear()
            try:
                conn.close()
            except self._libvirt.libvirtError:
                pass
            if not self.stopping.is_set():
                LOG.warning("libvirt connection for events closed; reconnecting")
                self.stopping.wait(1.0)

    def _connect(self):
        lv = self._libvirt
        conn = lv.open(self.uri)
        self._closed.clear()
        try:
            conn.setKeepAlive(5, 3)  # notice a dead libvirtd within ~20 s
        except lv.libvirtError:
            pass  # the test driver has no keepalive
        conn.registerCloseCallback(lambda *_: self._closed.set(), None)
        conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)
        conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self._agent,
                                    None)
        return conn

    def _lifecycle(self, _conn, domain, event: int, detail: int, _opaque) -> None:
        try:
            self.handler(domain.UUIDString().lower(), meaning(event, detail))
        except Exception:  # never let a handler failure kill libvirt's event loop
            LOG.exception("handling libvirt event %s failed", event_name(event, detail))

    def _agent(self, _conn, domain, state: int, reason: int, _opaque) -> None:
        connected = state == self._libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
        try:
            if self.on_agent is not None:
                self.on_agent(domain.UUIDString().lower(), connected, agent_reason(reason))
        except Exception:  # never let a handler failure kill libvirt's event loop
            LOG.exception("handling a guest agent event failed")


_loop_lock = threading.Lock()
_loop_started = False


def _start_event_loop(libvirt) -> None:
    """libvirt's default event loop, once per process, in a daemon thread."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; we log what matters.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _loop_started = True
