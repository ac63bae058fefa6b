"""Where the agent finds its guests and their guest agents.

- :class:`QgaSocketDirectory`: a directory of qemu-ga unix sockets named
  ``<instance-uuid>.sock`` (plain QEMU, tests).
- :class:`Libvirt`: the domains of a libvirt connection that have a qemu-ga
  channel; Nova names each domain's UUID after its instance.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import xml.etree.ElementTree as ElementTree

from novaproxy.agent.guest_agent import GuestAgentUnavailable
from novaproxy.agent.qga_libvirt import LibvirtGuestAgent
from novaproxy.agent.qga_socket import SocketGuestAgent

LOG = logging.getLogger(__name__)
AGENT_CHANNEL = "org.qemu.guest_agent.0"


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


class QgaSocketDirectory:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._agents: dict = {}
        self._lock = threading.Lock()

    def instances(self) -> set:
        found = set()
        for name in os.listdir(self.directory):
            stem, ext = os.path.splitext(name)
            if ext == ".sock" and _is_uuid(stem):
                found.add(stem.lower())
        return found

    def agent(self, instance: str) -> SocketGuestAgent:
        path = os.path.join(self.directory, f"{instance}.sock")
        with self._lock:
            agent = self._agents.get(instance)
            if agent is None:
                if not os.path.exists(path):
                    raise GuestAgentUnavailable(f"no qemu-ga socket for {instance} here")
                agent = self._agents[instance] = SocketGuestAgent(path)
            return agent

    def forget(self, gone: set) -> None:
        with self._lock:
            for instance in gone:
                agent = self._agents.pop(instance, None)
                if agent is not None:
                    agent.close()


class Libvirt:
    def __init__(self, uri: str) -> None:
        import libvirt

        self._libvirt = libvirt
        # libvirt prints every error to stderr by default; we log what matters.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.uri = uri
        self.conn = libvirt.open(uri)
        self._agents: dict = {}
        self._lock = threading.Lock()

    def instances(self) -> set:
        found = set()
        for domain in self.conn.listAllDomains(self._libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if _has_agent_channel(domain.XMLDesc(0)):
                found.add(domain.UUIDString().lower())
        return found

    def agent(self, instance: str) -> LibvirtGuestAgent:
        with self._lock:
            agent = self._agents.get(instance)
            if agent is None:
                try:
                    domain = self.conn.lookupByUUIDString(instance)
                except self._libvirt.libvirtError as exc:
                    raise GuestAgentUnavailable(f"{instance}: {exc}") from None
                agent = self._agents[instance] = LibvirtGuestAgent(domain)
            return agent

    def forget(self, gone: set) -> None:
        with self._lock:
            for instance in gone:
                self._agents.pop(instance, None)


def _has_agent_channel(domain_xml: str) -> bool:
    root = ElementTree.fromstring(domain_xml)
    return any(target.get("name") == AGENT_CHANNEL
               for target in root.iterfind("./devices/channel/target"))


def from_config(config):
    if config.hypervisor == "qga-socket":
        return QgaSocketDirectory(config.qga_socket_dir)
    return Libvirt(config.libvirt_uri)
