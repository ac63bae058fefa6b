"""Masakari notifications over a real keystoneauth1 session, to a recording endpoint."""

import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from harness.processes import free_port
from harness.recording_http import RecordingEndpoint
from novaproxy.agent import masakari
from novaproxy.agent.nova import ConfigError

TOKEN = "s3cret-admin-token"
INSTANCE = str(uuid.uuid4())
WHEN = datetime(2024, 5, 1, 12, 34, 56, tzinfo=timezone.utc)
ACCEPTED = (202, {"notification": {"notification_uuid": "n-1", "status": "new"}})


def client(url: str, **retry) -> masakari.Masakari:
    """The agent's own construction, from a [masakari] section with a static token."""
    built = masakari.from_section({"auth_type": "admin_token", "endpoint": url + "/v1",
                                   "token": TOKEN, "timeout": "5"})
    return masakari.Masakari(built.api, **{"backoff": 0.05, **retry})


def notify(api: masakari.Masakari) -> masakari.NotifyResult:
    return api.notify(INSTANCE, "compute1", masakari.QEMU_GUEST_AGENT_ERROR,
                      masakari.STOPPED_FAILED, WHEN)


@pytest.fixture
def endpoint():
    made = []

    def make(*script, default=ACCEPTED):
        made.append(RecordingEndpoint(script, default))
        return made[-1]

    yield make
    for recording in made:
        recording.stop()


def assert_no_token(result):
    assert TOKEN not in str(result) and TOKEN not in repr(result)


def test_the_notification_is_the_one_masakari_monitors_send(endpoint):
    recording = endpoint()
    result = notify(client(recording.url))
    assert (result.outcome, result.attempts, result.status) == ("delivered", 1, 202)
    assert result.notification_uuid == "n-1" and result.ok
    [request] = recording.requests
    assert (request.method, request.path) == ("POST", "/v1/notifications")
    assert request.body == {"notification": {
        "type": "VM", "hostname": "compute1", "generated_time": "2024-05-01T12:34:56.000000",
        "payload": {"event": "QEMU_GUEST_AGENT_ERROR", "instance_uuid": INSTANCE,
                    "vir_domain_event": "STOPPED_FAILED"}}}
    assert request.header("X-Auth-Token") == TOKEN
    assert request.header("OpenStack-API-Version") == "instance-ha 1.0"
    assert request.header("Content-Type") == "application/json"
    assert_no_token(result)


def test_generated_time_is_utc_without_a_zone(endpoint):
    recording = endpoint()
    api = client(recording.url)
    api.notify(INSTANCE, "compute1", masakari.LIFECYCLE, masakari.STOPPED_FAILED,
               WHEN.astimezone(timezone(timedelta(hours=9))))
    api.notify(INSTANCE, "compute1", masakari.LIFECYCLE, masakari.STOPPED_FAILED,
               datetime(2024, 5, 1, 12, 34, 56, 789))  # naive: already UTC
    times = [r.body["notification"]["generated_time"] for r in recording.requests]
    assert times == ["2024-05-01T12:34:56.000000", "2024-05-01T12:34:56.000789"]
    assert recording.requests[0].body["notification"]["payload"]["event"] == "LIFECYCLE"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_until_masakari_takes_it(endpoint, status):
    error = (status, {"masakariFault": {"code": status, "message": "engine busy"}})
    recording = endpoint(error, error)
    result = notify(client(recording.url))
    assert (result.outcome, result.attempts, result.status) == ("delivered", 3, 202)
    assert len(recording.requests) == 3
    assert recording.requests[0].body == recording.requests[2].body


@pytest.mark.parametrize("status, fault, message", [
    (400, "badRequest", "Host with name compute1 could not be found."),
    (403, "forbidden", "Policy doesn't allow os_masakari_api:notifications:create"),
])
def test_client_errors_are_not_retried(endpoint, status, fault, message):
    recording = endpoint((status, {fault: {"code": status, "message": message}}))
    result = notify(client(recording.url))
    assert (result.outcome, result.attempts, result.status, result.message) == (
        "refused", 1, status, message)
    assert not result.ok and message in str(result)
    assert len(recording.requests) == 1
    assert_no_token(result)


def test_a_duplicate_means_masakari_already_has_it(endpoint):
    message = "Notification received from host compute1 of  type 'VM' is duplicate."
    recording = endpoint((409, {"conflictingRequest": {"code": 409, "message": message}}))
    result = notify(client(recording.url))
    assert (result.outcome, result.attempts, result.status) == ("duplicate", 1, 409)
    assert result.ok and "already has it" in str(result)
    assert len(recording.requests) == 1


def test_a_host_on_maintenance_is_a_refusal_not_a_duplicate(endpoint):
    message = ("Notification received from host compute1 of type 'VM' is ignored as the "
               "host is already under maintenance.")
    recording = endpoint((409, {"conflictingRequest": {"code": 409, "message": message}}))
    result = notify(client(recording.url))
    assert (result.outcome, result.status, result.message) == ("refused", 409, message)
    assert not result.ok


def test_persistent_server_errors_give_up_after_the_attempts(endpoint):
    recording = endpoint(default=(503, {"serviceUnavailable": {"code": 503,
                                                               "message": "down"}}))
    result = notify(client(recording.url, attempts=3))
    assert (result.outcome, result.attempts, result.status, result.message) == (
        "unavailable", 3, 503, "down")
    assert len(recording.requests) == 3 and "after 3 attempt(s)" in str(result)


def test_a_refused_connection_gives_up_within_the_deadline():
    api = client(f"http://127.0.0.1:{free_port()}", attempts=1000, deadline=1.0)
    started = time.monotonic()
    result = notify(api)
    assert time.monotonic() - started < 1.5
    assert result.outcome == "unavailable" and result.status is None
    assert 1 < result.attempts < 1000 and result.message
    assert_no_token(result)


def test_a_silent_endpoint_gives_up_within_the_deadline():
    """Connections are accepted by the kernel but never answered: each request's
    timeout is cut to what is left of the deadline."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        api = client(f"http://127.0.0.1:{silent.getsockname()[1]}", deadline=1.0)
        started = time.monotonic()
        result = notify(api)
        assert time.monotonic() - started < 1.5
    assert (result.outcome, result.status) == ("unavailable", None)
    assert_no_token(result)


@pytest.mark.parametrize("section, error", [
    ({}, "[masakari] auth_type: set it"),
    ({"auth_type": "nope"}, "[masakari] auth_type = 'nope': no such keystoneauth1 plugin"),
    ({"auth_type": "admin_token", "endpoint": "http://m/v1"},
     "[masakari] auth_type = admin_token: Token.__init__() missing 1 required positional "
     "argument: 'token'"),
    ({"auth_type": "admin_token", "endpoint": "http://m/v1", "token": "t", "retries": "3"},
     "[masakari] unknown option(s) for auth_type admin_token: retries"),
])
def test_config_errors_name_the_masakari_section(section, error):
    with pytest.raises(ConfigError) as exc:
        masakari.from_section(section)
    assert str(exc.value).startswith(error)
