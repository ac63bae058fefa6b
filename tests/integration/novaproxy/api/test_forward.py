"""The forwarding app: byte-for-byte fidelity, against a real echo server and the real Nova."""

import hashlib
import json
import threading

import pytest
import urllib3
import webtest
from cheroot import wsgi

from harness.processes import free_port
from novaproxy.api.forward import app_factory


def echo_app(environ, start_response):
    """A real upstream that reports what it received."""
    length = environ.get("CONTENT_LENGTH")
    body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([i % 256]) * 65536 for i in range(80))  # 5 MiB, streamed
    seen = {"method": environ["REQUEST_METHOD"], "uri": environ.get("REQUEST_URI"),
            "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
            "body_sha": hashlib.sha256(body).hexdigest(), "length": len(body)}
    payload = json.dumps(seen).encode()
    start_response("418 I'm a teapot", [("Content-Type", "application/json"),
                                        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                        ("X-Openstack-Request-Id", "req-echo"),
                                        ("Content-Length", str(len(payload)))])
    return [payload]


def serve(app):
    """``app`` on a real cheroot server (as novaproxy-api runs it); its URL."""
    port = free_port()
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=4)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def proxy_url():
    echo_server, echo_url = serve(echo_app)
    proxy_server, url = serve(app_factory({}, upstream=echo_url))
    yield url
    proxy_server.stop()
    echo_server.stop()


def test_request_is_forwarded_as_sent(proxy_url):
    body = bytes(range(256)) * 10
    resp = urllib3.request("PUT", proxy_url + "/v2.1/servers/a%2Fb/action?x=1&y=%20",
                           body=body, headers={
                               "X-Auth-Token": "tok", "Connection": "X-Hop",
                               "X-Hop": "secret", "Keep-Alive": "5", "Host": "proxy.example",
                               "OpenStack-API-Version": "compute 2.96",
                               "Content-Type": "application/octet-stream"})
    assert (resp.status, resp.reason) == (418, "I'm a teapot")
    seen = resp.json()
    assert seen["method"] == "PUT"
    assert seen["uri"] == "/v2.1/servers/a%2Fb/action?x=1&y=%20"
    assert seen["body_sha"] == hashlib.sha256(body).hexdigest()
    assert seen["headers"]["HTTP_X_AUTH_TOKEN"] == "tok"
    assert seen["headers"]["HTTP_OPENSTACK_API_VERSION"] == "compute 2.96"
    assert seen["headers"]["HTTP_HOST"] == "proxy.example"  # the client's Host is kept
    assert not {"HTTP_X_HOP", "HTTP_KEEP_ALIVE"} & set(seen["headers"])


def test_chunked_request_body_is_forwarded(proxy_url):
    chunks = [b"a" * 1000, b"b" * 70000, b"c"]
    resp = urllib3.PoolManager().urlopen("POST", proxy_url + "/upload", body=iter(chunks),
                                         chunked=True)
    assert resp.json()["body_sha"] == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_response_headers_and_large_bodies_come_back_intact(proxy_url):
    resp = urllib3.request("GET", proxy_url + "/anything")
    assert resp.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert resp.headers["X-Openstack-Request-Id"] == "req-echo"
    big = urllib3.request("GET", proxy_url + "/big")
    assert big.data == b"".join(bytes([i % 256]) * 65536 for i in range(80))


def test_unreachable_upstream_is_a_502():
    app = webtest.TestApp(app_factory({}, upstream=f"http://127.0.0.1:{free_port()}",
                                      connect_timeout="1"))
    resp = app.get("/v2.1/servers", status=502)
    assert "unreachable" in resp.text


def test_bad_upstream_is_refused_at_load():
    with pytest.raises(ValueError, match="upstream"):
        app_factory({}, upstream="nova:8774")


NOVA_SAMPLE = [
    ("GET", "/", "admin:demo"),
    ("GET", "/v2.1/", "admin:demo"),
    ("GET", "/v2.1/flavors/detail", "admin:demo"),
    ("GET", "/v2.1/flavors/1", "admin:demo"),
    ("GET", "/v2.1/flavors/does-not-exist", "admin:demo"),
    ("GET", "/v2.1/servers/detail?limit=2&sort_key=display_name", "admin:demo"),
    ("GET", "/v2.1/servers?name=a%20b", "admin:demo"),
    ("GET", "/v2.1/servers/00000000-0000-0000-0000-000000000000", "admin:demo"),
    ("GET", "/v2.1/os-hypervisors", "admin:demo"),
    ("GET", "/v2.1/os-hypervisors", "member:demo"),
    ("GET", "/v2.1/os-aggregates", "admin:demo"),  # admin-only (os-services: its
    # updated_at moves with every service report, so two reads may differ)
    ("GET", "/v2.1/limits", "member:demo"),
    ("POST", "/v2.1/servers", "member:demo"),
]


@pytest.mark.parametrize("method, path, token", NOVA_SAMPLE)
def test_nova_answers_through_the_proxy_as_directly(stack, method, path, token):
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.96",
               "Host": "proxy.example:8774", "Content-Type": "application/json"}
    body = b'{"server": {"name": 1}}' if method == "POST" else None
    direct = urllib3.request(method, stack.nova_url + path, body=body, headers=headers)
    via = urllib3.request(method, stack.proxy_url + path, body=body, headers=headers)
    assert via.status == direct.status
    assert via.data == direct.data
    for name in ("Content-Type", "OpenStack-API-Version", "Vary"):
        assert via.headers.get(name) == direct.headers.get(name)
    assert via.headers.get("x-openstack-request-id", "").startswith("req-") == \
        direct.headers.get("x-openstack-request-id", "").startswith("req-")


MALFORMED_ACTIONS = [
    ("POST", "/action", b"not json"),
    ("POST", "/action", b""),
    ("POST", "/action", b"[]"),
    ("POST", "/action", b'{"reboot": {"type": "SIDEWAYS"}}'),  # classified, then Nova's 400
    ("POST", "/action", b'{"reboot": {"type": "SOFT"}, "os-stop": null}'),
    ("POST", "/action", b'{"noSuchAction": {}}'),
    ("POST", "/action", b'{"resize": {"flavorRef": "does-not-exist"}}'),
    ("POST", "/migrations/4242/action", b'{"force_complete": null}'),
    ("POST", "/migrations/4242/action", b'{"force_complete": null, "x": 1}'),
    ("DELETE", "/migrations/4242", None),
]


@pytest.mark.parametrize("method, suffix, body", MALFORMED_ACTIONS)
def test_malformed_actions_reach_nova_as_sent(stack, negotiated_flavor, recorder, method,
                                              suffix, body):
    # A negotiated server whose application accepts everything: whatever the filter makes
    # of a request, the caller must get Nova's own answer.
    server, _ = stack.boot("malformed", negotiated_flavor)
    recorder(stack.guests[server.id])
    path = f"/v2.1/servers/{server.id}{suffix}"
    headers = {"X-Auth-Token": "admin:demo", "OpenStack-API-Version": "compute 2.96",
               "Content-Type": "application/json"}
    direct = urllib3.request(method, stack.nova_url + path, body=body, headers=headers)
    via = urllib3.request(method, stack.proxy_url + path, body=body, headers=headers)
    assert (via.status, via.data) == (direct.status, direct.data)
    assert direct.status >= 400


def test_a_filter_may_bound_one_requests_wait_for_nova(stack):
    """The negotiation filter's look-ups wait at most their own timeout, not read_timeout:
    the caller is waiting for them (here Nova hangs, through the fault proxy)."""
    import time

    import webob

    from harness import fault_proxy
    from novaproxy.api.forward import TIMEOUT_ENVIRON, ForwardApp

    faults = fault_proxy.FaultProxy(stack.nova_url)
    try:
        faults.set(fault_proxy.HANG)
        app = ForwardApp(faults.url, connect_timeout=5, read_timeout=60, pool_size=2)
        req = webob.Request.blank("/v2.1/servers", headers={"X-Auth-Token": "admin:demo"})
        req.environ[TIMEOUT_ENVIRON] = 0.5
        started = time.monotonic()
        resp = req.get_response(app)
        assert resp.status_int == 502 and "badGateway" in resp.json
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        faults.stop()
