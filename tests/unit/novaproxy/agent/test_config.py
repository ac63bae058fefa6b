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
    assert conf.spool_dir == "/run/guestd/spool"


@pytest.mark.parametrize("line, spool_dir", [
    ("spool_dir = guestd-spool\n", "guestd-spool"),
    ("spool_dir =\n", ""),  # guest-exec only
])
def test_spool_dir(tmp_path, line, spool_dir):
    conf = config.load(write(tmp_path, f"[agent]\nredis_url = redis://r\n{line}"))
    assert conf.spool_dir == spool_dir


def test_outbox_file(tmp_path):
    assert config.load(write(tmp_path, "[agent]\nredis_url = redis://r\n")).outbox_file == \
        "/run/guestd/outbox.json"
    conf = config.load(write(tmp_path, "[agent]\nredis_url = redis://r\n"
                                       "outbox_file = guestd-outbox.json\n"))
    assert conf.outbox_file == "guestd-outbox.json"
    with pytest.raises(config.ConfigError, match="outbox_file"):
        config.load(write(tmp_path, "[agent]\nredis_url = redis://r\noutbox_file =\n"))


def test_a_multi_line_spool_dir_is_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="spool_dir"):
        config.load(write(tmp_path, "[agent]\nredis_url = redis://r\nspool_dir = a\n  b\n"))


@pytest.mark.parametrize("body, message", [
    ("[other]\n", "no \\[agent\\] section"),
    ("[agent]\n", "redis_url"),
    ("[agent]\nredis_url = redis://r\nhypervisor = xen\n", "hypervisor = 'xen'"),
    ("[agent]\nredis_url = redis://r\nhypervisor = qga-socket\nqga_socket_dir = /nonexistent\n",
     "qga_socket_dir"),
    ("[agent]\nredis_url = redis://r\nworkers = many\n", "workers"),
    ("[agent]\nredis_url = redis://r\nroute_interval = 0\n", "\\[agent\\] route_interval"),
    ("[agent]\nredis_url = redis://r\n[monitoring]\nrecovery = nuke\n",
     "\\[monitoring\\] recovery = 'nuke': must be one of reboot, stop, masakari, log"),
    ("[agent]\nredis_url = redis://r\n[monitoring]\nrecovery = masakari\n",
     "needs a \\[masakari\\] section"),
    ("[agent]\nredis_url = redis://r\n[monitoring]\ninterval = 0.01\n", "at least 0.2 s"),
    ("[agent]\nredis_url = redis://r\n[monitoring]\nthreshold = 0\n",
     "\\[monitoring\\] threshold = '0': must be greater than 0"),
    ("[agent]\nredis_url = redis://r\n[monitoring]\nenabled = maybe\n", "enabled"),
])
def test_errors_say_what_to_fix(tmp_path, body, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(write(tmp_path, body))


def test_unreadable_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "missing.ini"))


def test_monitoring_defaults_follow_the_design(tmp_path):
    conf = config.load(write(tmp_path, "[agent]\nredis_url = redis://r\n")).monitoring
    assert conf.enabled and conf.status_file == "/run/guestd/status.json"
    assert (conf.defaults.interval, conf.defaults.threshold, conf.defaults.recovery) == (
        1.0, 3, "reboot")
    assert (conf.max_recoveries, conf.recovery_window) == (3, 3600.0)


def test_monitoring_section(tmp_path):
    conf = config.load(write(tmp_path, "[agent]\nredis_url = redis://r\n[monitoring]\n"
                                       "interval = 0.5\nthreshold = 4\nrecovery = masakari\n"
                                       "status_file = guestd-status.json\n"
                                       "[masakari]\nauth_type = admin_token\n"))
    assert conf.monitoring.defaults.interval == 0.5
    assert conf.monitoring.defaults.recovery == "masakari"
    assert conf.masakari == {"auth_type": "admin_token"}
