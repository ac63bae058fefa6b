import pytest

from novaproxy.agent import config


def write(tmp_path, body):
    path = tmp_path / "agent.ini"
    path.write_text(body)
    return str(path)


def test_qga_socket_config(tmp_path):
    path = write(tmp_path, f"[agent]\nhost = c1\nredis_url = redis://:pw@r:6379/0\n"
                           f"hypervisor = qga-socket\nqga_socket_dir = {tmp_path}\n"
                           f"guestd_ctl = /usr/bin/python3 -IS /usr/bin/guestd-ctl\n")
    conf = config.load(path)
    assert conf.host == "c1" and conf.hypervisor == "qga-socket"
    assert conf.guestd_ctl == ("/usr/bin/python3", "-IS", "/usr/bin/guestd-ctl")


def test_defaults(tmp_path):
    conf = config.load(write(tmp_path, "[agent]\nredis_url = redis://r\n"))
    assert conf.hypervisor == "libvirt" and conf.libvirt_uri == "qemu:///system"
    assert conf.guestd_ctl == ("/usr/bin/guestd-ctl",) and conf.host


@pytest.mark.parametrize("body, message", [
    ("[other]\n", "no \\[agent\\] section"),
    ("[agent]\n", "redis_url"),
    ("[agent]\nredis_url = redis://r\nhypervisor = xen\n", "hypervisor = 'xen'"),
    ("[agent]\nredis_url = redis://r\nhypervisor = qga-socket\nqga_socket_dir = /nonexistent\n",
     "qga_socket_dir"),
    ("[agent]\nredis_url = redis://r\nworkers = many\n", "workers"),
    ("[agent]\nredis_url = redis://r\nroute_interval = 0\n", "route_interval"),
])
def test_errors_say_what_to_fix(tmp_path, body, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(write(tmp_path, body))


def test_unreadable_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "missing.ini"))
