"""libvirt lifecycle events from the test:///default driver, through the agent to its monitor.

The domain is defined with the UUID of a server in the real Nova fixture, so the
crash reaches the monitor's state machine, is confirmed with Nova and recovered
exactly as in production: Nova's instance actions show the hard reboot.
"""

import threading
import time
import uuid

import libvirt

from harness import driver_agent
from harness.audit import audits
from harness.processes import wait_for
from novaproxy import audit
from novaproxy.agent import lifecycle_events, monitor
from tests.integration.novaproxy.agent.test_hypervisor import CHANNEL, DOMAIN


def test_meanings():
    m = lifecycle_events.meaning
    assert m(lifecycle_events.STOPPED, 2) == lifecycle_events.Meaning(
        "STOPPED_CRASHED", True, None, False)
    assert m(lifecycle_events.STOPPED, 5).name == "STOPPED_FAILED" and m(5, 5).fatal
    assert m(lifecycle_events.CRASHED, 0).fatal  # guest panic
    assert m(lifecycle_events.SUSPENDED, 2).fatal  # I/O error
    assert m(lifecycle_events.SUSPENDED, 3).fatal  # watchdog
    assert m(lifecycle_events.SUSPENDED, 0).silence == "libvirt: suspended_paused"
    assert m(lifecycle_events.STOPPED, 0).silence == "libvirt: stopped_shutdown"
    assert m(lifecycle_events.STARTED, 0).silence == ""
    assert m(lifecycle_events.UNDEFINED, 0) == lifecycle_events.Meaning(
        "UNDEFINED_REMOVED", False, None, True)
    assert lifecycle_events.event_name(42, 7) == "EVENT42_7"  # a newer libvirt's event


def test_events_from_the_test_driver():
    seen = []
    stopping = threading.Event()
    events = lifecycle_events.LibvirtEvents("test:///default",
                                            lambda i, m: seen.append((i, m.name)), stopping)
    threading.Thread(target=events.run, daemon=True).start()
    assert events.listening.wait(5)
    conn = libvirt.open("test:///default")
    instance = str(uuid.uuid4())
    domain = conn.defineXML(DOMAIN.format(name="events", uuid=instance,
                                          channel=CHANNEL.format(name="events")))
    try:
        wait_for(lambda: (instance, "DEFINED_ADDED") in seen, 5, "the define event")
        domain.create()
        domain.suspend()
        domain.resume()
        domain.coreDump("/dev/null", libvirt.VIR_DUMP_CRASH)  # the test driver's crash
        wait_for(lambda: (instance, "STOPPED_CRASHED") in seen, 5, "the crash event")
        mine = [name for i, name in seen if i == instance]
        assert mine == ["DEFINED_ADDED", "STARTED_BOOTED", "SUSPENDED_PAUSED",
                        "RESUMED_UNPAUSED", "STOPPED_CRASHED"]
    finally:
        stopping.set()
        domain.undefine()
        conn.close()


def test_a_crash_event_reaches_the_monitor_and_nova_reboots_once(stack, tmp_path):
    flavor = stack.flavor(f"crash-{uuid.uuid4().hex[:6]}", {"guest:monitoring": "true"})
    server, host = stack.boot("crashing", flavor, with_guest=False)
    agent = driver_agent.agent(stack, host, tmp_path, "nova_refresh = 0.5\n")
    conn = libvirt.open(driver_agent.URI)
    domain = conn.defineXML(DOMAIN.format(name="crashing", uuid=server.id,
                                          channel=CHANNEL.format(name="crashing")))
    domain.create()
    try:
        agent.routes.refresh()
        driver_agent.listen(agent)
        threading.Thread(target=agent.watcher.run, daemon=True).start()
        # This agent's own watcher (the stack's agent for the same host publishes a view of
        # the server too, so the published view cannot say which agent watches it).
        wait_for(lambda: agent.watcher.watching(server.id), 10, "the monitor watching the domain")
        domain.coreDump("/dev/null", libvirt.VIR_DUMP_CRASH)
        try:
            wait_for(lambda: "reboot" in stack.instance_actions(server.id), 10,
                     "the hard reboot")
        except TimeoutError as exc:  # what Nova and the audit trail say, for the report
            trail = audits(stack, server.id)
            raise AssertionError(f"{exc}: Nova's actions {stack.instance_actions(server.id)}, "
                                 f"audit {trail}") from None
        failure, = audits(stack, server.id, audit.FAILURE)
        assert (failure["event"], failure["why"]) == (monitor.CRASHED,
                                                      "libvirt reports STOPPED_CRASHED")
        time.sleep(1)
        assert stack.instance_actions(server.id).count("reboot") == 1
    finally:
        agent.stopping.set()
        if domain.isActive():
            domain.destroy()
        domain.undefine()
        conn.close()
