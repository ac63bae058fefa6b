"""``novaproxy scale`` run as operators run it, against a real HTTP server.

The server is :class:`harness.scale_proxy.ScaleProxy`, a stand-in for the proxy's
``novaproxy-scale`` handler (being built in parallel) that answers the documented
contract. Authentication is keystoneauth1's own ``admin_token`` and ``none`` plugins,
as the system tier authenticates python-novaclient (no Keystone runs here).
"""

import os
import subprocess
import sys

import pytest

from harness.scale_proxy import ScaleProxy
from novaproxy import flavor

TOKEN = "admin:demo-s3cret"


@pytest.fixture
def proxy():
    proxy = ScaleProxy(token=TOKEN)
    yield proxy
    proxy.stop()


def run(*args, auth: dict | None = None):
    """The CLI in its own process, with only the OS_* variables given (default: the
    ``admin_token`` plugin, whose endpoint stands in for the catalog's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(auth or {})
    return subprocess.run([sys.executable, "-m", "novaproxy.cli", "scale", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def admin_token(proxy, token=TOKEN) -> dict:
    return {"OS_AUTH_TYPE": "admin_token", "OS_ENDPOINT": proxy.url, "OS_TOKEN": token}


def test_online_n_then_up_say_the_guests_view_and_send_the_contracts_request(proxy):
    server = proxy.add("web-1", plugged=4)
    down = run(server.id, "--online", "2", auth=admin_token(proxy))
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"server {server.id}: 2 of 4 vCPUs online (0-1); "
                                  "vCPUs 2-3 offline (operation ")
    assert server.online == {0, 1}
    sent = proxy.requests[-1]
    assert (sent.method, sent.path) == ("POST", f"/v2.1/servers/{server.id}/action")
    assert sent.body == {"novaproxy-scale": {"online": 2}}
    assert sent.headers["HTTP_OPENSTACK_API_VERSION"] == "compute 2.47"
    assert sent.headers["HTTP_X_AUTH_TOKEN"] == TOKEN
    assert sent.headers["HTTP_USER_AGENT"].startswith("novaproxy-scale keystoneauth1/")
    up = run(server.id, "--up", auth=admin_token(proxy))
    assert up.returncode == 0, up.stderr
    assert f"server {server.id}: 3 of 4 vCPUs online (0-2); vCPU 3 offline" in up.stdout
    assert proxy.requests[-1].body == {"novaproxy-scale": {"step": "up"}}
    assert run(server.id, "--down", auth=admin_token(proxy)).returncode == 0
    assert proxy.requests[-1].body == {"novaproxy-scale": {"step": "down"}}
    assert server.online == {0, 1}


def test_endpoint_overrides_the_catalogs_and_noauth_sends_no_credentials(proxy):
    server = proxy.add("web-1", plugged=2)
    nowhere = {"OS_AUTH_TYPE": "admin_token", "OS_ENDPOINT": "http://127.0.0.1:1/v2.1",
               "OS_TOKEN": TOKEN}
    done = run(server.id, "--down", "--endpoint", proxy.url, auth=nowhere)
    assert done.returncode == 0, done.stderr
    assert "1 of 2 vCPUs online (0); vCPU 1 offline" in done.stdout
    anonymous = run(server.id, "--up", "--endpoint", proxy.url, "--os-auth-type", "none")
    assert anonymous.returncode == 1
    assert "HTTP 401 error: The request you have made requires authentication." in (
        anonymous.stderr)
    assert proxy.requests[-1].headers["HTTP_X_AUTH_TOKEN"] == "notused"  # noauth's marker
    open_proxy = ScaleProxy(token=None)  # a proxy that needs no token takes noauth
    try:
        other = open_proxy.add("db-1", plugged=2)
        done = run(other.id, "--down", "--endpoint", open_proxy.url, "--os-auth-type", "none")
        assert done.returncode == 0, done.stderr
        assert other.online == {0}
    finally:
        open_proxy.stop()


def test_policy_errors_say_status_and_novas_message(proxy):
    server = proxy.add("web-1", plugged=4, specs={flavor.VCPU_SCALING: "true",
                                                  flavor.MIN_VCPUS: "2"})
    plain = proxy.add("web-2", plugged=4, specs={})
    out_of_range = run(server.id, "--online", "1", auth=admin_token(proxy))
    assert out_of_range.returncode == 1
    assert out_of_range.stdout == ""
    assert (f"novaproxy scale: server {server.id}: not scaled: HTTP 400 badRequest: 1 vCPU(s) "
            "online is out of range: this flavor allows 2 (guest:min_vcpus) to 4") in (
        out_of_range.stderr)
    assert "OpenStack-Novaproxy-Result" not in out_of_range.stderr
    disabled = run(plain.id, "--down", auth=admin_token(proxy))
    assert disabled.returncode == 1
    assert "HTTP 400 badRequest: vCPU scaling is not enabled" in disabled.stderr
    assert server.online == plain.online == {0, 1, 2, 3}


def test_a_rejection_and_a_busy_server_say_the_proxys_result(proxy):
    rejecting = proxy.add("db-1", plugged=4, rejected_by="db: replica catching up")
    busy = proxy.add("db-2", plugged=4, busy=True)
    rejected = run(rejecting.id, "--down", auth=admin_token(proxy))
    assert rejected.returncode == 1
    assert (f"HTTP 409 conflictingRequest: action-rejected: the guest rejected scale-down of "
            f"server {rejecting.id}: db: replica catching up "
            "[OpenStack-Novaproxy-Result: action-rejected]") in rejected.stderr
    assert rejecting.online == {0, 1, 2, 3}
    in_progress = run(busy.id, "--down", auth=admin_token(proxy))
    assert in_progress.returncode == 1
    assert "[OpenStack-Novaproxy-Result: negotiation-in-progress]" in in_progress.stderr


def test_unknown_and_unreachable_servers(proxy):
    gone = "11111111-2222-3333-4444-555555555555"
    lost = proxy.add("db-1", plugged=2, unreachable="its guest agent does not answer")
    missing = run(gone, "--down", auth=admin_token(proxy))
    assert missing.returncode == 1
    assert f"HTTP 404 itemNotFound: Instance {gone} could not be found." in missing.stderr
    unreachable = run(lost.id, "--down", auth=admin_token(proxy))
    assert unreachable.returncode == 1
    assert "HTTP 503 serviceUnavailable: scale-down of server" in unreachable.stderr
    assert "its guest agent does not answer" in unreachable.stderr


def test_a_name_is_used_only_when_exactly_one_server_has_it(proxy):
    one = proxy.add("web.1", plugged=2)
    proxy.add("webx1", plugged=2)  # matches "web.1" as a pattern, not as a name
    twins = [proxy.add("twin", plugged=2), proxy.add("twin", plugged=2)]
    done = run("web.1", "--down", auth=admin_token(proxy))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"server {one.id}: 1 of 2 vCPUs online")
    assert one.online == {0}
    both = run("twin", "--down", auth=admin_token(proxy))
    assert both.returncode == 2
    assert ("2 servers are named 'twin': pass the UUID of one of "
            + ", ".join(sorted(t.id for t in twins))) in both.stderr
    nobody = run("nobody", "--down", auth=admin_token(proxy))
    assert nobody.returncode == 2
    assert "no server you can see is named 'nobody': pass its UUID" in nobody.stderr
    assert all(t.online == {0, 1} for t in twins)


def test_no_answer_in_time_or_a_crash_says_the_outcome_is_unknown(proxy):
    slow = proxy.add("db-1", plugged=2, delay=3.0)
    late = run(slow.id, "--down", "--timeout", "0.5", auth=admin_token(proxy))
    assert late.returncode == 1
    assert "whether it was scaled is unknown: see novaproxy status" in late.stderr
    broken = proxy.add("db-2", plugged=2, crashes=True)
    crashed = run(broken.id, "--down", auth=admin_token(proxy))
    assert crashed.returncode == 1
    assert (f"server {broken.id}: HTTP 500 computeFault: Unexpected API Error.; whether it "
            "was scaled is unknown: see novaproxy status") in crashed.stderr
    assert broken.online == {0}  # it was


def test_what_a_guest_said_cannot_drive_the_terminal(proxy):
    server = proxy.add("db-1", plugged=2, rejected_by="db: \x1b[2J\x1b]0;owned\x07busy")
    rejected = run(server.id, "--down", auth=admin_token(proxy))
    assert rejected.returncode == 1
    assert "\x1b" not in rejected.stderr and "\x07" not in rejected.stderr
    assert r"db: \x1b[2J\x1b]0;owned\x07busy" in rejected.stderr


def test_tokens_and_passwords_are_never_printed(proxy):
    server = proxy.add("db-1", plugged=2, rejected_by="db: busy")
    outputs = [run(server.id, "--down", auth=admin_token(proxy)),
               run(server.id, "--down", auth=admin_token(proxy, token="wrong-s3cret")),
               run("nobody", "--down", "--os-auth-url", "http://127.0.0.1:1/v3",
                   "--os-username", "admin", "--os-password", "pa55-s3cret",
                   "--os-project-name", "demo", "--os-user-domain-name", "Default",
                   "--os-project-domain-name", "Default")]
    assert [o.returncode for o in outputs] == [1, 1, 1]
    assert "HTTP 401" in outputs[1].stderr
    assert "no answer" in outputs[2].stderr  # no Keystone there
    for done in outputs:
        assert "s3cret" not in done.stdout + done.stderr
