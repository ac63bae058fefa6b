"""The fault tier's own tools, on real sockets: the HTTP fault proxy and redis-server's faults."""

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness import fault_proxy
from harness.fault_proxy import FaultProxy
from harness.processes import wait_for
from harness.redis_server import RedisServer

pytestmark = pytest.mark.faults


def redis_client(server, timeout):
    # Explicit: redis-py's own default retries would multiply every timeout here.
    return redis.Redis(port=server.port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _echo(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"method": self.command, "path": self.path,
                           "body": body.decode()}).encode()
        self.send_response(203, "Echoed")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _echo


@pytest.fixture
def proxy():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}")
    yield proxy
    proxy.stop()
    upstream.shutdown()
    upstream.server_close()


def request(proxy, method="GET", path="/v2.1/servers", body=None, timeout=5.0):
    conn = http.client.HTTPConnection(proxy.url.split("//")[1], timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.getheader("X-Upstream"), resp.read()
    finally:
        conn.close()


def test_pass_relays_the_request_and_the_answer_byte_for_byte(proxy):
    # A path that is neither decoded nor re-encoded on the way.
    status, marker, data = request(proxy, "POST", "/v2.1/servers/a%2Fb//action", b'{"x": 1}')
    assert (status, marker) == (203, "yes")
    assert json.loads(data) == {"method": "POST", "path": "/v2.1/servers/a%2Fb//action",
                                "body": '{"x": 1}'}
    assert proxy.requests == [fault_proxy.Seen("POST", "/v2.1/servers/a%2Fb//action", "pass")]


def test_error_reset_hang_and_delay_switch_at_run_time(proxy):
    proxy.set(fault_proxy.ERROR)
    status, marker, data = request(proxy)
    assert (status, marker) == (500, None) and b"computeFault" in data
    proxy.set(fault_proxy.RESET)
    with pytest.raises(ConnectionResetError):
        request(proxy)
    proxy.set(fault_proxy.HANG)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        request(proxy, timeout=0.5)
    assert time.monotonic() - started >= 0.5
    proxy.set(fault_proxy.DELAY, delay=0.5)
    started = time.monotonic()
    assert request(proxy)[0] == 203
    assert time.monotonic() - started >= 0.5
    proxy.set(fault_proxy.PASS)
    assert request(proxy)[0] == 203
    assert [seen.mode for seen in proxy.requests] == ["error", "reset", "hang", "delay", "pass"]


def test_a_fault_can_be_limited_to_matching_requests(proxy):
    proxy.set(fault_proxy.ERROR, match=lambda method, path: method == "POST")
    assert request(proxy, "GET")[0] == 203
    assert request(proxy, "POST", body=b"{}")[0] == 500


def test_a_hung_request_is_closed_unanswered_when_the_mode_changes(proxy):
    proxy.set(fault_proxy.HANG)
    outcome = []

    def ask():
        try:
            outcome.append(request(proxy, timeout=10))
        except (http.client.RemoteDisconnected, ConnectionError) as exc:
            outcome.append(type(exc))

    thread = threading.Thread(target=ask)
    thread.start()
    while not proxy.requests:
        time.sleep(0.01)
    proxy.set(fault_proxy.PASS)
    thread.join(5)
    assert outcome == [http.client.RemoteDisconnected]


def test_keep_alive_connections_get_each_request_s_mode(proxy):
    conn = http.client.HTTPConnection(proxy.url.split("//")[1], timeout=5)
    conn.request("GET", "/a")
    assert conn.getresponse().read() and True
    proxy.set(fault_proxy.ERROR)
    conn.request("GET", "/b")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 500
    conn.close()


@pytest.mark.parametrize("appendonly", [False, True])
def test_redis_restarts_with_and_without_its_data(short_dir, appendonly):
    server = RedisServer(short_dir, appendonly=appendonly)
    client = redis_client(server, 1)
    try:
        client.set("kept", "1")
        server.restart(keep_data=True)
        assert client.get("kept") == b"1"
        client.set("after-save", "1")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start(keep_data=True)
        # Written after the last save: only an append-only file keeps it through a SIGKILL.
        assert (client.get("after-save") is not None) == appendonly
        server.restart(keep_data=False, kill=True)
        assert client.dbsize() == 0
    finally:
        client.close()
        server.stop()


def test_redis_restart_keeping_data_loses_no_acknowledged_write(short_dir):
    """A write Redis answered before the restart is there after it (a SAVE then a
    SIGTERM would lose the writes in between)."""
    server = RedisServer(short_dir)
    writer = redis_client(server, 1)
    acknowledged = []
    stop = threading.Event()

    def write():
        while not stop.is_set():
            try:
                acknowledged.append(writer.incr("counter"))
            except redis.RedisError:
                time.sleep(0.01)  # the restart: retried once it is up

    thread = threading.Thread(target=write, daemon=True)
    try:
        thread.start()
        wait_for(lambda: len(acknowledged) > 100, 5, "writes before the restart")
        server.restart(keep_data=True)
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) > count + 10, 5, "writes after the restart")
        stop.set()
        thread.join(5)
        # A lost write would make a later INCR answer a number already answered.
        assert all(a < b for a, b in zip(acknowledged, acknowledged[1:]))
        assert int(writer.get("counter")) == acknowledged[-1]
    finally:
        stop.set()
        writer.close()
        server.stop()


def test_frozen_redis_accepts_connections_but_never_answers(short_dir):
    server = RedisServer(short_dir)
    client = redis_client(server, 0.5)
    try:
        server.freeze()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.thaw()
        assert client.ping()
        server.freeze()
    finally:
        client.close()
        server.stop()  # thaws first
    assert not server.running
