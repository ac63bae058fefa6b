"""Guest discovery: a directory of qemu-ga sockets, and libvirt's test:///default driver."""

import uuid

import pytest

from novaproxy.agent import guest_agent, hypervisor

DOMAIN = """<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>
<memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os><devices>{channel}</devices></domain>"""
CHANNEL = """<channel type='unix'><source mode='bind' path='/tmp/{name}.sock'/>
<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"""


def test_socket_directory_finds_uuid_sockets_only(make_guest):
    guest = make_guest()
    open(f"{make_guest.socket_dir}/not-a-uuid.sock", "w").close()
    open(f"{make_guest.socket_dir}/{uuid.uuid4()}.txt", "w").close()
    directory = hypervisor.QgaSocketDirectory(make_guest.socket_dir)
    assert directory.instances() == {guest.instance}
    assert directory.agent(guest.instance).execute("guest-ping", timeout=2) == {}
    with pytest.raises(guest_agent.GuestAgentUnavailable):
        directory.agent(str(uuid.uuid4()))


def test_libvirt_finds_running_domains_with_a_guest_agent_channel():
    host = hypervisor.Libvirt("test:///default")
    with_agent, without_agent, stopped = (str(uuid.uuid4()) for _ in range(3))
    for name, uid, channel, start in (("a", with_agent, CHANNEL, True),
                                      ("b", without_agent, "", True),
                                      ("c", stopped, CHANNEL, False)):
        domain = host.conn.defineXML(DOMAIN.format(name=name, uuid=uid,
                                                   channel=channel.format(name=name)))
        if start:
            domain.create()
    assert host.instances() == {with_agent}
    # The test driver has no guest agent: that is "unavailable", not garbage.
    with pytest.raises(guest_agent.GuestAgentUnavailable):
        host.agent(with_agent).execute("guest-ping", timeout=1)
    with pytest.raises(guest_agent.GuestAgentUnavailable):
        host.agent(str(uuid.uuid4()))
