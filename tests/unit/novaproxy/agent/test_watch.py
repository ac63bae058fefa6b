from novaproxy.agent.watch import Silences

ACTIVE = {"status": "ACTIVE", "OS-EXT-SRV-ATTR:host": "compute1"}
STOP = [{"id": "op-1", "event": "stop", "state": "forwarded"}]


def test_the_records_come_first_then_nova_then_libvirt():
    s = Silences("compute1")
    assert s.reason() == ""
    s.from_libvirt("libvirt: suspended_paused")
    s.from_nova({**ACTIVE, "status": "PAUSED"})
    assert s.reason() == "Nova reports it PAUSED"
    s.from_records(STOP)
    assert s.reason() == "stop in flight (recorded by the proxy)"


def test_an_operation_that_ends_keeps_quiet_until_nova_is_read():
    s = Silences("compute1")
    s.from_nova(ACTIVE)
    assert s.from_records(STOP) is False
    assert s.from_records([]) is True  # ended: the caller re-reads Nova
    assert s.reason() == "operation over; reading Nova"
    s.from_nova(ACTIVE)
    assert s.reason() == ""


def test_records_read_again_before_a_miss_only_add():
    s = Silences("compute1")
    s.from_records(STOP)
    s.recorded_since(None)
    assert s.operations == "stop in flight (recorded by the proxy)"
    s = Silences("compute1")
    s.recorded_since(STOP)
    assert s.operations == "stop in flight (recorded by the proxy)"
