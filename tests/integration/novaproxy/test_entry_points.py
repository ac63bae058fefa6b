"""The daemons' command lines: configuration errors say what to fix, secrets stay out."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def run(*argv, env=None):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, cwd=REPO)


def test_agent_rejects_a_bad_config(tmp_path):
    config = tmp_path / "agent.ini"
    config.write_text("[agent]\nredis_url = redis://r\nhypervisor = xen\n")
    done = run("-m", "novaproxy.agent.service", "--config", str(config))
    assert done.returncode == 2
    assert "configuration error: [agent] hypervisor = 'xen'" in done.stderr


def test_agent_without_redis_fails_fast_and_hides_the_password(tmp_path):
    config = tmp_path / "agent.ini"
    config.write_text(f"[agent]\nredis_url = redis://:hunter2@127.0.0.1:1/0\n"
                      f"hypervisor = qga-socket\nqga_socket_dir = {tmp_path}\n")
    done = run("-m", "novaproxy.agent.service", "--config", str(config))
    assert done.returncode == 2
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("change, message", [
    (("vote_timeout = 10", "vote_timeout = soon"), "vote_timeout = 'soon'"),
    (("upstream = http://127.0.0.1:8774", "upstream = nova:8774"), "upstream = 'nova:8774'"),
])
def test_api_rejects_a_bad_paste_file(tmp_path, change, message):
    paste = tmp_path / "paste.ini"
    paste.write_text(open(os.path.join(REPO, "etc", "paste.ini")).read().replace(*change))
    done = run("-m", "novaproxy.api.server", "--paste", str(paste), "--bind", "127.0.0.1:1")
    assert done.returncode == 2 and message in done.stderr


def test_api_rejects_a_bad_bind():
    done = run("-m", "novaproxy.api.server", "--paste", "etc/paste.ini", "--bind", "8774")
    assert done.returncode == 2 and "expected HOST:PORT" in done.stderr


def test_wsgi_entry_point_serves_the_named_paste_file():
    done = run("-c", "from novaproxy.api.wsgi import application; "
                     "print(type(application).__name__, type(application.app).__name__)",
               env={"NOVAPROXY_PASTE": os.path.join(REPO, "etc", "paste.ini")})
    assert done.stdout.split() == ["NegotiationFilter", "ForwardApp"]
