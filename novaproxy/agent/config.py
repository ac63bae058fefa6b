"""The agent's INI configuration, validated at start-up with messages that say what to fix."""

from __future__ import annotations

import configparser
import os
import shlex
import socket
from dataclasses import dataclass

HYPERVISORS = ("libvirt", "qga-socket")


class ConfigError(ValueError):
    pass


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


def _positive(section, key: str, default: float, kind=float) -> float:
    raw = section.get(key, fallback=str(default))
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"[agent] {key} = {raw!r}: must be a number") from None
    if value <= 0:
        raise ConfigError(f"[agent] {key} = {raw!r}: must be greater than 0")
    return value


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
    )
