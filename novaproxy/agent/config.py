"""The agent's INI configuration, validated at start-up with messages that say what to fix."""

from __future__ import annotations

import configparser
import os
import shlex
import socket
from dataclasses import dataclass, field

from guestd import group_protocol
from guestd.protocol import DEFAULT_SPOOL_DIR, DEFAULT_STATUS_FILE
from novaproxy.agent import monitor

HYPERVISORS = ("libvirt", "qga-socket")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class MonitoringConfig:
    """The ``[monitoring]`` section: operator defaults, which a flavor may tighten."""

    enabled: bool = True  # monitor the VMs whose flavor sets guest:monitoring=true
    defaults: monitor.Settings = monitor.Settings()
    max_recoveries: int = 3  # per VM within recovery_window (VMware HA: 3 per hour)
    recovery_window: float = 3600.0
    status_file: str = DEFAULT_STATUS_FILE
    nova_refresh: float = 10.0  # seconds between reads of this host's servers from Nova


@dataclass(frozen=True)
class AgentConfig:
    host: str
    redis_url: str
    hypervisor: str
    qga_socket_dir: str
    libvirt_uri: str
    guestd_ctl: tuple
    workers: int
    route_interval: float
    operation_interval: float
    nova: dict  # the [nova] section (keystoneauth1 options), empty without one
    masakari: dict = field(default_factory=dict)  # the [masakari] section, the same way
    monitoring: MonitoringConfig = MonitoringConfig()
    # guestd's spool in the guest, tried before guest-exec; empty: guest-exec only.
    spool_dir: str = DEFAULT_SPOOL_DIR
    # guestd's group-messaging outbox in the guest (relative paths are qemu-ga's cwd's).
    outbox_file: str = group_protocol.DEFAULT_OUTBOX


def _positive(section, key: str, default: float, kind=float) -> float:
    raw = section.get(key, fallback=str(default))
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"[{section.name}] {key} = {raw!r}: must be a number") from None
    if value <= 0:
        raise ConfigError(f"[{section.name}] {key} = {raw!r}: must be greater than 0")
    return value


def _monitoring(parser: configparser.ConfigParser) -> MonitoringConfig:
    if not parser.has_section("monitoring"):
        return MonitoringConfig()
    section = parser["monitoring"]
    try:
        enabled = section.getboolean("enabled", fallback=True)
    except ValueError:
        raise ConfigError("[monitoring] enabled: must be true or false") from None
    recovery = section.get("recovery", monitor.REBOOT).strip()
    if recovery not in monitor.RECOVERIES:
        raise ConfigError(f"[monitoring] recovery = {recovery!r}: must be one of "
                          + ", ".join(monitor.RECOVERIES))
    if recovery == monitor.MASAKARI and not parser.has_section("masakari"):
        raise ConfigError("[monitoring] recovery = masakari needs a [masakari] section "
                          "(keystoneauth1 options, like [nova])")
    interval = _positive(section, "interval", 1.0)
    if interval < 0.2:
        raise ConfigError(f"[monitoring] interval = {interval}: at least 0.2 s")
    defaults = monitor.Settings(
        interval=interval,
        threshold=int(_positive(section, "threshold", 3, int)),
        boot_grace=_positive(section, "boot_grace", 300.0),
        recovery=recovery,
        recovery_timeout=_positive(section, "recovery_timeout", 300.0),
    )
    status_file = section.get("status_file", DEFAULT_STATUS_FILE).strip()
    if not status_file:
        raise ConfigError("[monitoring] status_file: the path of guestd's status file in "
                          "the guest")
    return MonitoringConfig(
        enabled=enabled, defaults=defaults,
        max_recoveries=int(_positive(section, "max_recoveries", 3, int)),
        recovery_window=_positive(section, "recovery_window", 3600.0),
        status_file=status_file,
        nova_refresh=_positive(section, "nova_refresh", 10.0),
    )


def load(path: str) -> AgentConfig:
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(path):
        raise ConfigError(f"{path}: cannot read the configuration file")
    if not parser.has_section("agent"):
        raise ConfigError(f"{path}: no [agent] section")
    section = parser["agent"]
    redis_url = section.get("redis_url", "").strip()
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("[agent] redis_url: set it to a redis://, rediss:// or unix:// URL")
    hypervisor = section.get("hypervisor", "libvirt").strip()
    if hypervisor not in HYPERVISORS:
        raise ConfigError(f"[agent] hypervisor = {hypervisor!r}: must be one of "
                          + ", ".join(HYPERVISORS))
    qga_socket_dir = section.get("qga_socket_dir", "").strip()
    if hypervisor == "qga-socket" and not os.path.isdir(qga_socket_dir):
        raise ConfigError(f"[agent] qga_socket_dir = {qga_socket_dir!r}: must be an existing "
                          "directory of <instance-uuid>.sock qemu-ga sockets")
    guestd_ctl = tuple(shlex.split(section.get("guestd_ctl", "/usr/bin/guestd-ctl")))
    if not guestd_ctl:
        raise ConfigError("[agent] guestd_ctl: must be the command line to run in the guest")
    spool_dir = section.get("spool_dir", DEFAULT_SPOOL_DIR).strip()
    if any(c in spool_dir for c in "\0\n"):
        raise ConfigError(f"[agent] spool_dir = {spool_dir!r}: must be a path in the guest "
                          "(guestd's --spool-dir), or empty for guest-exec only")
    outbox_file = section.get("outbox_file", group_protocol.DEFAULT_OUTBOX).strip()
    if not outbox_file or any(c in outbox_file for c in "\0\n"):
        raise ConfigError(f"[agent] outbox_file = {outbox_file!r}: must be the path of "
                          "guestd's group-messaging outbox in the guest")
    return AgentConfig(
        # Must match the compute host name Nova knows the host by (its CONF.host).
        host=section.get("host", "").strip() or socket.gethostname(),
        redis_url=redis_url,
        hypervisor=hypervisor,
        qga_socket_dir=qga_socket_dir,
        libvirt_uri=section.get("libvirt_uri", "qemu:///system").strip(),
        guestd_ctl=guestd_ctl,
        workers=int(_positive(section, "workers", 32, int)),
        route_interval=_positive(section, "route_interval", 5.0),
        operation_interval=_positive(section, "operation_interval", 1.0),
        nova=dict(parser["nova"]) if parser.has_section("nova") else {},
        masakari=dict(parser["masakari"]) if parser.has_section("masakari") else {},
        monitoring=_monitoring(parser),
        spool_dir=spool_dir,
        outbox_file=outbox_file,
    )
