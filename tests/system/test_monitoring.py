"""Monitoring and recovery against the real Nova API and real qemu-ga + guestd guests.

The agents run with the default interval and threshold (1 s, 3 misses), a
short boot grace (harness.stack.MONITOR_BOOT_GRACE) and a recording endpoint in
place of Masakari. A "hung" guest is its qemu-ga SIGSTOPped; the fake virt
driver does not touch the guest when Nova reboots it, so the test thaws it once
Nova's instance actions show the reboot.
"""

import json
import os
import socket
import time
import uuid

import pytest

from guestd.client import Application
from harness.audit import audits, wait_audits, wait_state
from harness.processes import wait_for
from harness.stack import MONITOR_BOOT_GRACE
from novaproxy import audit


@pytest.fixture(scope="module")
def monitored_flavor(stack):
    return stack.flavor(f"monitored-{uuid.uuid4().hex[:6]}", {"guest:monitoring": "true"})


@pytest.fixture(scope="module")
def masakari_flavor(stack):
    return stack.flavor(f"masakari-{uuid.uuid4().hex[:6]}",
                        {"guest:monitoring": "true", "guest:recovery": "masakari"})


@pytest.fixture(scope="module")
def negotiated_monitored_flavor(stack):
    return stack.flavor(f"negotiated-monitored-{uuid.uuid4().hex[:6]}",
                        {"guest:negotiation": "true", "guest:monitoring": "true"})


def reboots(stack, instance):
    return stack.instance_actions(instance).count("reboot")


def boot_healthy(stack, flavor, name="mon"):
    server, host = stack.boot(name, flavor)
    wait_state(stack, server.id, "healthy")
    return server, host, stack.guests[server.id]


def test_hung_guest_is_declared_failed_and_rebooted_once(stack, monitored_flavor):
    server, host, guest = boot_healthy(stack, monitored_flavor)
    guest.hang()
    failure, = wait_audits(stack, server.id, audit.FAILURE)
    evidence = json.loads(failure["evidence"])
    assert failure["event"] == "hung" and failure["host"] == host
    assert evidence["missed_pings"] == 3  # the default threshold
    recovery, = wait_audits(stack, server.id, audit.RECOVERY)
    assert (recovery["outcome"], recovery["why"]) == ("recovering", "Nova hard reboot requested")
    wait_for(lambda: reboots(stack, server.id) == 1, 10, "Nova's reboot action")
    guest.unhang()  # what the reboot would have done to a real guest
    wait_state(stack, server.id, "healthy")
    assert reboots(stack, server.id) == 1
    assert len(audits(stack, server.id, audit.FAILURE)) == 1


def test_a_guest_hung_after_a_stop_and_start_is_recovered_once(stack,
                                                               negotiated_monitored_flavor):
    """The demo's story: stop and start through the proxy, then the guest hangs. The
    monitor view from before the stop still says healthy for up to 2 s after the
    start; only an answer heard since (stack.wait_settled) shows the guest that
    will hang is the one Nova started."""
    server, host, guest = boot_healthy(stack, negotiated_monitored_flavor)
    nova = stack.nova()
    nova.servers.stop(server.id)
    stack.wait_for_server(server.id, "SHUTOFF")
    nova.servers.start(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    stack.wait_settled(server.id)
    guest.hang()
    failure, = wait_audits(stack, server.id, audit.FAILURE)
    assert failure["event"] == "hung" and json.loads(failure["evidence"])["missed_pings"] == 3
    wait_for(lambda: reboots(stack, server.id) == 1, 10, "Nova's reboot action")
    guest.unhang()
    stack.wait_settled(server.id)
    assert sorted(stack.instance_actions(server.id)) == ["create", "reboot", "start", "stop"]
    assert len(audits(stack, server.id, audit.FAILURE)) == 1
    assert len(audits(stack, server.id, audit.RECOVERY)) == 1


def test_restarted_agent_does_not_recover_the_same_failure_again(stack, monitored_flavor):
    server, host, guest = boot_healthy(stack, monitored_flavor)
    guest.hang()
    wait_audits(stack, server.id, audit.RECOVERY)
    wait_for(lambda: reboots(stack, server.id) == 1, 10, "Nova's reboot action")
    stack.restart_agent(host)
    # The new agent knows the guest answered before: still silent after the boot
    # grace is a failure, and the recovery is found already claimed.
    failures = wait_audits(stack, server.id, audit.FAILURE, count=2,
                          timeout=MONITOR_BOOT_GRACE + 15)
    recoveries = wait_audits(stack, server.id, audit.RECOVERY, count=2)
    assert "already under way" in recoveries[-1]["why"], failures[-1]
    assert reboots(stack, server.id) == 1
    guest.unhang()
    wait_state(stack, server.id, "healthy")


def test_intended_silence_causes_no_recovery(stack, monitored_flavor):
    server, host, guest = boot_healthy(stack, monitored_flavor)
    nova = stack.nova()  # through the proxy, which records each operation
    for stop, settled, start in (("stop", "SHUTOFF", "start"), ("pause", "PAUSED", "unpause"),
                                 ("suspend", "SUSPENDED", "resume")):
        getattr(nova.servers, stop)(server.id)
        stack.wait_for_server(server.id, settled)
        wait_state(stack, server.id, "quiet")
        time.sleep(5)  # longer than interval x threshold + one interval
        getattr(nova.servers, start)(server.id)
        stack.wait_for_server(server.id, "ACTIVE")
        wait_state(stack, server.id, "healthy")
    nova.servers.live_migrate(server.id, host=None, block_migration="auto")
    stack.wait_for_server(server.id, "ACTIVE")
    wait_for(lambda: stack.guests[server.id].qga_socket.startswith(
        stack.socket_dir(host) + os.sep) is False, 10, "the guest on its new host")
    wait_state(stack, server.id, "healthy")
    assert audits(stack, server.id, audit.FAILURE) == []
    assert reboots(stack, server.id) == 0


def test_vm_that_never_answers_is_reported_after_its_grace(stack, monitored_flavor):
    server, host = stack.boot("silent", monitored_flavor, with_guest=False)
    # A guest agent channel nobody answers on: the image has no qemu-ga.
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(stack.socket_dir(host), f"{server.id}.sock")
    silent.bind(path)
    silent.listen(8)
    try:
        view = wait_state(stack, server.id, "never-answered", timeout=MONITOR_BOOT_GRACE + 15)
        assert view["answered"] == "no"
        event, = [e for e in audits(stack, server.id, audit.MONITOR)
                  if e["outcome"] == "never-answered"]
        assert "is qemu-ga in the image?" in event["why"]
        assert audits(stack, server.id, audit.RECOVERY) == []
    finally:
        silent.close()
        os.unlink(path)


def test_unhealthy_application_asking_for_reboot_gets_one(stack, monitored_flavor):
    server, host, guest = boot_healthy(stack, monitored_flavor)
    app = Application("web", socket_path=guest.guestd_socket).start()
    try:
        assert app.registered.wait(5)
        app.report_health(False, "answers 500 to every request", "reboot")
        failure, = wait_audits(stack, server.id, audit.FAILURE)
        assert failure["event"] == "application"
        assert json.loads(failure["evidence"]) == {"application": "web",
                                                   "reason": "answers 500 to every request"}
        wait_for(lambda: reboots(stack, server.id) == 1, 10, "Nova's reboot action")
        time.sleep(3)  # the report stands; one episode, one reboot
        assert reboots(stack, server.id) == 1
    finally:
        app.stop()


def test_masakari_gets_the_notification(stack, masakari_flavor):
    server, host, guest = boot_healthy(stack, masakari_flavor)
    sent = len(stack.masakari.requests)
    guest.hang()
    wait_audits(stack, server.id, audit.RECOVERY)
    request = wait_for(lambda: stack.masakari.requests[sent:] and stack.masakari.requests[sent],
                       10, "the Masakari notification")
    notification = request.body["notification"]
    assert request.method == "POST" and request.path == "/v1/notifications"
    assert (notification["type"], notification["hostname"]) == ("VM", host)
    assert notification["payload"] == {"event": "QEMU_GUEST_AGENT_ERROR",
                                       "instance_uuid": server.id,
                                       "vir_domain_event": "STOPPED_FAILED"}
    assert reboots(stack, server.id) == 0  # Masakari's engine recovers, not the agent
    guest.unhang()


def test_a_guestd_that_stops_counting_is_a_failure(stack, monitored_flavor):
    import signal

    server, host, guest = boot_healthy(stack, monitored_flavor)
    wait_for(lambda: os.path.exists(guest.status_file), 5, "guestd's status file")
    guest.guestd.signal(signal.SIGSTOP)  # qemu-ga still answers; guestd is stuck
    try:
        failure, = wait_audits(stack, server.id, audit.FAILURE)
        assert failure["event"] == "guestd-stalled"
        wait_for(lambda: reboots(stack, server.id) == 1, 10, "Nova's reboot action")
    finally:
        guest.guestd.signal(signal.SIGCONT)
