import pytest

from guestd import protocol
from novaproxy.agent import monitor
from novaproxy.agent.monitor import Failure, Monitor, Settings, Transition

SETTINGS = Settings(interval=1.0, threshold=3, boot_grace=30.0, recovery="reboot",
                    recovery_timeout=60.0)


def healthy(t=0.0, settings=SETTINGS):
    m = Monitor("u-1", settings, now=t)
    m.answered(t)
    return m


def failures(out):
    return [o for o in out if isinstance(o, Failure)]


def test_first_answer_makes_a_booting_guest_healthy():
    m = Monitor("u-1", SETTINGS, now=0.0)
    assert m.state == monitor.BOOTING
    assert m.answered(2.0) == [Transition("booting", "healthy", "first answer")]


def test_failure_declared_on_the_threshold_th_consecutive_miss():
    m = healthy()
    assert m.missed(2.0, "timeout") == [Transition("healthy", "suspect",
                                                   "1 missed ping(s): timeout")]
    assert m.missed(3.0, "timeout") == []
    out = m.missed(4.0, "timeout")
    failure, = failures(out)
    assert m.state == monitor.FAILED
    assert (failure.cause, failure.action) == ("hung", "reboot")
    assert failure.evidence == {"missed_pings": 3, "last_error": "timeout",
                                "last_answer_ago": 4.0, "silent_for": 3.0}


def test_an_answer_between_misses_resets_the_count():
    m = healthy()
    m.missed(1.0, "timeout")
    m.missed(2.0, "timeout")
    assert m.answered(3.0)[0].new == "healthy"
    m.missed(4.0, "timeout")
    m.missed(5.0, "timeout")
    assert m.state == monitor.SUSPECT


def test_a_guest_that_closes_its_agent_channel_is_restarting_not_hung():
    m = healthy()
    m.missed(1.0, "timeout")
    assert m.restarting(1.5, "the guest agent disconnected") == [
        Transition("suspect", "booting", "the guest agent disconnected")]
    for t in range(2, 29):  # a reboot in the guest: silent, within the boot grace
        assert m.missed(float(t), "not connected") == [] and m.tick(float(t)) == []
    assert m.answered(29.0) == [Transition("booting", "healthy", "first answer")]
    # One that never comes back fails at the end of the boot grace, as any boot would.
    m.restarting(30.0, "the guest agent disconnected")
    failure, = failures(m.tick(60.0))
    assert failure.cause == "hung" and "though it has answered before" in failure.why


def test_channel_closing_changes_nothing_outside_healthy_and_suspect():
    m = healthy()
    m.quiet(1.0, "Nova: stop in flight")
    assert m.restarting(2.0, "the guest agent disconnected") == []
    assert m.state == monitor.QUIET
    m = healthy()
    m.crashed(1.0, "CRASHED_PANICKED")
    assert m.restarting(2.0, "the guest agent disconnected") == [] and m.state == "failed"


def test_expected_silence_never_counts():
    m = healthy()
    assert m.quiet(1.0, "Nova: stop in flight") == [
        Transition("healthy", "quiet", "Nova: stop in flight")]
    for t in range(2, 20):
        assert m.missed(float(t), "timeout") == []
    assert m.tick(100.0) == []
    assert m.active(101.0) == [Transition("quiet", "booting", "expected to run again")]
    assert m.answered(102.0)[0].new == "healthy"


def test_a_guest_that_answered_before_and_does_not_after_start_has_failed():
    m = healthy()
    m.quiet(1.0, "SHUTOFF")
    m.active(10.0)
    assert m.tick(39.0) == []
    failure, = failures(m.tick(40.0))
    assert failure.cause == "hung" and "though it has answered before" in failure.why


def test_a_vm_that_never_answered_is_reported_not_recovered():
    m = Monitor("u-1", SETTINGS, now=0.0)
    for t in range(1, 30):
        assert m.missed(float(t), "no socket") == []
    out = m.tick(30.0)
    assert out == [Transition("booting", "never-answered", "no answer from the guest agent "
                              "within 30s of start (is qemu-ga in the image?)")]
    assert m.tick(1000.0) == []
    assert m.answered(1001.0)[0].new == "healthy"  # late qemu-ga: monitored from now on


def test_recovering_waits_for_an_answer_and_gives_up_after_its_timeout():
    m = healthy()
    for t in (1.0, 2.0, 3.0):
        m.missed(t, "timeout")
    m.recovering(3.5, "Nova hard reboot requested")
    assert m.missed(4.0, "timeout") == []  # silence is the recovery's doing
    assert m.quiet(4.5, "task_state rebooting_hard") == []
    assert m.tick(63.0) == []
    failure, = failures(m.tick(63.5))
    assert "within 60s of its recovery" in failure.why


def test_recovered_guest_is_healthy_again():
    m = healthy()
    for t in (1.0, 2.0, 3.0):
        m.missed(t, "timeout")
    m.recovering(3.5, "rebooting")
    assert m.answered(20.0) == [Transition("recovering", "healthy",
                                           "answered after the recovery")]


def test_left_alone_after_the_rate_limit_until_it_answers():
    m = healthy()
    for t in (1.0, 2.0, 3.0):
        m.missed(t, "timeout")
    m.left_alone(3.0, "3 recoveries in the last hour")
    assert m.missed(4.0, "timeout") == [] and m.tick(10_000.0) == []
    assert m.crashed(5.0, "STOPPED_CRASHED") == []
    assert m.answered(6.0)[0].new == "healthy"


def test_a_libvirt_crash_fails_at_once_even_when_quiet():
    m = healthy()
    m.quiet(1.0, "PAUSED")
    failure, = failures(m.crashed(2.0, "STOPPED_FAILED"))
    assert (failure.cause, failure.evidence["libvirt_event"]) == ("crashed", "STOPPED_FAILED")


def status(seq, *apps, interval=1.0):
    return protocol.status(seq, interval, [protocol.app_health(*app) for app in apps])


def test_an_unhealthy_application_gets_the_action_it_asks_for():
    m = healthy()
    assert failures(m.status(1.0, status(1, ("db", False, "stuck", "log")))) == []
    out = m.status(2.0, status(2, ("db", False, "stuck", "log"), ("web", False, "500s",
                                                                    "reboot")))
    failure, = failures(out)
    assert (failure.cause, failure.action) == ("application", "reboot")
    assert failure.evidence == {"application": "web", "reason": "500s"}
    # The same report again, even after the recovery, is not a second failure:
    m.recovering(2.5, "rebooting")
    m.answered(3.0)
    assert failures(m.status(3.5, status(3, ("web", False, "500s", "reboot")))) == []
    # Healthy, then unhealthy again: a new episode.
    m.status(4.0, status(4))
    failure, = failures(m.status(5.0, status(5, ("web", False, "500s", "reboot"))))


def test_a_guestd_whose_counter_stops_has_failed():
    m = healthy()
    m.status(1.0, status(7))
    m.answered(2.0)
    assert m.tick(4.9) == []  # 3 × 1 s + 1 s of slack
    failure, = failures(m.tick(5.0))
    assert failure.cause == "guestd-stalled" and failure.evidence["status_seq"] == 7
    assert m.tick(6.0) == []


def test_a_silence_does_not_count_against_guestd_s_counter():
    m = healthy()
    m.status(1.0, status(7))
    for t in (2.0, 3.0, 4.0):
        m.missed(t, "timeout")
    m.recovering(4.1, "rebooting")
    m.answered(5.5)  # back, 4.5 s after guestd's counter was last read
    assert m.tick(5.5) == []
    m.status(5.6, status(8))
    assert m.tick(9.5) == []
    failure, = failures(m.tick(9.6))  # a real stall, counted from the read after the silence
    assert failure.cause == "guestd-stalled"


def test_flavor_settings():
    defaults = Settings()
    assert monitor.settings_from(defaults, {}) is None
    assert monitor.settings_from(defaults, {"guest:monitoring": "false"}) is None
    s = monitor.settings_from(defaults, {"guest:monitoring": "true", "guest:recovery": "log",
                                         "guest:monitoring_interval": "0.5",
                                         "guest:monitoring_threshold": "2"})
    assert (s.interval, s.threshold, s.recovery) == (0.5, 2, "log")


@pytest.mark.parametrize("specs, bad", [
    ({"guest:recovery": "explode"}, "guest:recovery='explode'"),
    ({"guest:monitoring_interval": "0.01"}, "guest:monitoring_interval='0.01'"),
    ({"guest:monitoring_threshold": "x"}, "guest:monitoring_threshold='x'"),
])
def test_invalid_flavor_settings_fall_back_and_are_named(specs, bad):
    specs = {"guest:monitoring": "true", **specs}
    assert monitor.settings_from(Settings(), specs) == Settings()
    assert monitor.invalid_specs(specs)[0].startswith(bad)


@pytest.mark.parametrize("server, reason", [
    ({"status": "ACTIVE", "OS-EXT-SRV-ATTR:host": "c1"}, ""),
    ({"status": "VERIFY_RESIZE", "OS-EXT-SRV-ATTR:host": "c1"}, ""),
    ({"status": "SHUTOFF", "OS-EXT-SRV-ATTR:host": "c1"}, "Nova reports it SHUTOFF"),
    ({"status": "ACTIVE", "OS-EXT-STS:task_state": "migrating"},
     "Nova is busy with it (migrating)"),
    ({"status": "ACTIVE", "OS-EXT-SRV-ATTR:host": "c2"}, "Nova has it on c2"),
    (None, "Nova no longer knows the server"),
])
def test_expected_silence_from_nova(server, reason):
    assert monitor.expected_silence(server, "c1") == reason


@pytest.mark.parametrize("ops, reason", [
    ([], ""),
    ([{"event": "reboot", "state": "preparing"}], ""),  # negotiating: the guest runs
    ([{"event": "reboot", "state": "forwarding"}], "reboot in flight (recorded by the proxy)"),
    ([{"event": "reboot", "state": "forwarded"}], "reboot in flight (recorded by the proxy)"),
    ([{"event": "stop", "state": "refused"}], ""),
    # vCPU scaling runs in the guest: silence only while the agent applies it.
    ([{"event": "scale-down", "state": "forwarding"}],
     "scale-down in flight (recorded by the proxy)"),
    ([{"event": "scale-down", "state": "forwarded"}], ""),  # applied, its end pending
    ([{"event": "scale-up", "state": "unknown"}], ""),
    ([{"event": "scale-up", "state": "forwarded"}, {"event": "stop", "state": "forwarded"}],
     "stop in flight (recorded by the proxy)"),
])
def test_operation_silence_from_the_records(ops, reason):
    assert monitor.operation_silence(ops) == reason
