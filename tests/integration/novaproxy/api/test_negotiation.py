"""The paste pipeline (negotiation + forward) under WebTest, against the real Nova
fixture, real Redis, real agents and real qemu-ga + guestd guests."""

import json
import os
import threading
import time
import uuid

import pytest
import webtest

from guestd.client import Vote
from harness.audit import audits
from novaproxy import audit, redis_schema
from novaproxy.api.server import load

TOKEN = {"X-Auth-Token": "admin:demo"}


@pytest.fixture(scope="module")
def pipeline(stack, session_dir):
    def make(**negotiation):
        path = os.path.join(session_dir, f"paste-{uuid.uuid4().hex[:6]}.ini")
        stack.write_paste(path, **negotiation)
        return webtest.TestApp(load(path))
    return make


@pytest.fixture(scope="module")
def proxy(pipeline):
    return pipeline()


def action(app, server_id, body, status="*"):
    return app.post(f"/v2.1/servers/{server_id}/action", json.dumps(body),
                    headers={**TOKEN, "Content-Type": "application/json"}, status=status)


def test_nack_is_a_409_with_the_reason_and_nova_never_sees_it(stack, proxy, negotiated_flavor,
                                                                 recorder):
    server, _ = stack.boot("nack", negotiated_flavor)
    rec = recorder(stack.guests[server.id], name="db",
                   verdict=lambda n: Vote.reject("replication in progress"))
    resp = action(proxy, server.id, {"reboot": {"type": "SOFT"}}, status=409)
    message = resp.json["conflictingRequest"]["message"]
    assert resp.json["conflictingRequest"]["code"] == 409
    assert message.startswith("action-rejected: ") and "db: replication in progress" in message
    assert resp.headers["OpenStack-Novaproxy-Result"] == "action-rejected"
    assert rec.seen == [("reboot", "vote")]
    assert "reboot" not in stack.instance_actions(server.id)
    assert stack.nova(direct=True).servers.get(server.id).status == "ACTIVE"


def test_ack_prepares_then_forwards(stack, proxy, negotiated_flavor, recorder):
    server, _ = stack.boot("ack", negotiated_flavor)
    rec = recorder(stack.guests[server.id])
    action(proxy, server.id, {"reboot": {"type": "HARD"}}, status=202)
    assert rec.seen == [("reboot", "vote"), ("reboot", "prepare")]
    stack.wait_for_server(server.id, "ACTIVE")
    assert "reboot" in stack.instance_actions(server.id)
    events = audits(stack, server.id)
    assert [(e["kind"], e.get("outcome")) for e in events
            if e["kind"] in (audit.NEGOTIATION, audit.NOTICE)] == [
        (audit.NEGOTIATION, "accept"), (audit.NOTICE, "accept")]


def test_flavor_without_the_extra_spec_passes_through(stack, proxy, plain_flavor, recorder):
    server, _ = stack.boot("plain", plain_flavor)
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("never asked"))
    action(proxy, server.id, {"reboot": {"type": "SOFT"}}, status=202)
    stack.wait_for_server(server.id, "ACTIVE")
    assert rec.seen == [] and "reboot" in stack.instance_actions(server.id)


def test_metadata_opts_a_server_out(stack, proxy, negotiated_flavor, recorder):
    server, _ = stack.boot("opted-out", negotiated_flavor)
    stack.nova(direct=True).servers.set_meta(server.id, {"guest:negotiation": "false"})
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("never asked"))
    action(proxy, server.id, {"os-stop": None}, status=202)
    assert rec.seen == []


def test_one_negotiation_per_instance(stack, proxy, negotiated_flavor, recorder):
    server, _ = stack.boot("busy", negotiated_flavor)
    rec = recorder(stack.guests[server.id])
    client = redis_schema.connect(stack.redis.url)
    assert redis_schema.acquire_lock(client, server.id, "someone-else", 30)
    try:
        started = time.monotonic()
        resp = action(proxy, server.id, {"reboot": {"type": "SOFT"}}, status=409)
        assert time.monotonic() - started < 1.0
        assert resp.headers["OpenStack-Novaproxy-Result"] == "negotiation-in-progress"
    finally:
        redis_schema.release_lock(client, server.id, "someone-else")
    assert rec.seen == []


def test_nova_refusal_sends_abort(stack, proxy, negotiated_flavor, recorder):
    server, _ = stack.boot("refused", negotiated_flavor)
    rec = recorder(stack.guests[server.id])
    # Nova refuses a resize to the flavor the server already has, after the vote.
    resp = action(proxy, server.id, {"resize": {"flavorRef": negotiated_flavor.id}}, status=400)
    assert "action-rejected" not in resp.text
    assert rec.wait_for(3) == [("resize", "vote"), ("resize", "prepare"), ("resize", "abort")]


def test_unreachable_guest_follows_policy(stack, pipeline, negotiated_flavor):
    server, _ = stack.boot("no-guest", negotiated_flavor, with_guest=False)
    strict = pipeline(unreachable="reject")
    resp = action(strict, server.id, {"reboot": {"type": "SOFT"}}, status=409)
    assert "no agent serves this instance" in resp.json["conflictingRequest"]["message"]
    action(pipeline(), server.id, {"reboot": {"type": "SOFT"}}, status=202)


def test_silence_follows_policy_within_the_flavor_deadline(stack, pipeline, recorder):
    flavor = stack.flavor(f"quick-{uuid.uuid4().hex[:6]}",
                          {"guest:negotiation": "true", "guest:vote_timeout": "1"})
    server, _ = stack.boot("silent", flavor)
    recorder(stack.guests[server.id], verdict=lambda n: time.sleep(5) or Vote.accept())
    started = time.monotonic()
    resp = action(pipeline(silence="reject"), server.id, {"os-stop": None}, status=409)
    assert time.monotonic() - started < 1.0 + 1.0
    assert "recorder: timeout" in resp.json["conflictingRequest"]["message"]


def test_concurrent_requests_on_one_instance(stack, proxy, negotiated_flavor, recorder):
    server, _ = stack.boot("concurrent", negotiated_flavor)
    recorder(stack.guests[server.id], verdict=lambda n: time.sleep(0.5) or Vote.reject("slow no"))
    results = []

    def call():
        results.append(action(proxy, server.id, {"reboot": {"type": "SOFT"}}).headers.get(
            "OpenStack-Novaproxy-Result"))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == ["action-rejected"] + ["negotiation-in-progress"] * 2


@pytest.fixture(scope="module")
def malformed_target(stack, negotiated_flavor):
    server, _ = stack.boot("malformed", negotiated_flavor)
    return server


@pytest.mark.parametrize("body, guest_saw", [
    (b'{"reboot": ', []),
    (b'{"reboot": {"type": "SOFT"}, "pause": null}', []),
    (b"[]", []),
    # Well-formed JSON naming a negotiated action with a value Nova's schema refuses:
    # the precheck validates it as Nova will, so the guest is not asked at all.
    (b'{"reboot": {"type": "SIDEWAYS"}}', []),
])
def test_malformed_requests_reach_nova_as_sent(stack, proxy, malformed_target, recorder, body,
                                               guest_saw):
    server = malformed_target
    rec = recorder(stack.guests[server.id])
    headers = {**TOKEN, "Content-Type": "application/json"}
    via_proxy = proxy.post(f"/v2.1/servers/{server.id}/action", body, headers=headers,
                           status="*")
    assert via_proxy.status_int == 400
    direct = _direct(stack, "POST", f"/v2.1/servers/{server.id}/action", body, headers)
    assert via_proxy.json == json.loads(direct[2])
    assert rec.wait_for(len(guest_saw), timeout=3) == guest_saw


def _direct(stack, method, path, body=None, headers=None):
    import urllib3

    resp = urllib3.request(method, stack.nova_url + path, body=body,
                           headers={**(headers or {}), "Host": "localhost:80"})
    return resp.status, resp.headers, resp.data


def test_bad_policy_stops_the_proxy_at_load(stack, session_dir):
    path = os.path.join(session_dir, "bad-paste.ini")
    stack.write_paste(path, vote_timeout="soon")
    with pytest.raises(ValueError, match=r"\[filter:negotiation\] vote_timeout = 'soon'"):
        load(path)


def test_a_failing_precheck_neither_fails_the_request_nor_skips_the_guest(
        stack, pipeline, negotiated_flavor, recorder):
    class Broken:
        def refusal(self, op, server, req):
            raise RuntimeError("a bug in the precheck")

    app = pipeline()
    app.app.precheck = Broken()  # the loaded pipeline's outermost app is the filter
    server, _ = stack.boot("broken-precheck", negotiated_flavor)
    rec = recorder(stack.guests[server.id], verdict=lambda n: Vote.reject("asked anyway"))
    resp = action(app, server.id, {"reboot": {"type": "SOFT"}}, status=409)
    assert "asked anyway" in resp.json["conflictingRequest"]["message"]
    assert rec.seen == [("reboot", "vote")]


def test_the_lock_is_a_lease_renewed_while_the_negotiation_runs(
        stack, pipeline, negotiated_flavor, recorder, monkeypatch):
    """A negotiation longer than the lease keeps its server; the lease itself stays short,
    so a proxy that dies frees the server within one lease (tests/faults proves that)."""
    from novaproxy.api import lease

    monkeypatch.setattr(lease, "LOCK_LEASE", 1.0)
    app = pipeline()
    server, _ = stack.boot("lease", negotiated_flavor)

    def slow(notice):
        time.sleep(2.5)
        return Vote.accept()

    recorder(stack.guests[server.id], verdict=slow)
    first = threading.Thread(target=lambda: action(app, server.id, {"reboot": {"type": "SOFT"}},
                                                   status=202), daemon=True)
    first.start()
    client = redis_schema.connect(stack.redis.url)
    time.sleep(1.8)  # past the first lease: renewed, never longer than one lease ahead
    assert 0 < client.pttl(redis_schema.lock_key(server.id)) <= 1000
    second = action(app, server.id, {"os-stop": None}, status=409)
    assert second.headers["OpenStack-Novaproxy-Result"] == "negotiation-in-progress"
    first.join(20)
    assert client.exists(redis_schema.lock_key(server.id)) == 0
