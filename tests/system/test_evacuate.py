"""Evacuation through novaproxy-api with real python-novaclient, against the real Nova API.

Evacuating needs a dead source host, and Nova lets a host whose evacuations are
done come back only after its compute service restarts; so this runs on a stack
of its own, whose source host stays down.
"""

import os

import pytest

from harness.audit import wait_audits
from novaproxy import audit
from tests.system.helpers import host_of


@pytest.fixture(scope="module")
def evacuation(session_dir):
    from harness.stack import Stack

    stack = Stack(os.path.join(session_dir, "evacuation"))
    yield stack
    stack.stop()


def test_evacuate_ends_where_the_server_was_rebuilt(evacuation, recorder):
    stack = evacuation
    flavor = stack.flavor("evacuated", {"guest:negotiation": "true"})
    server, source = stack.boot("evacuated", flavor)
    rec = recorder(stack.guests[server.id])
    nova = stack.nova(direct=True)
    service, = nova.services.list(host=source, binary="nova-compute")
    nova.services.force_down(service.id, True)

    stack.nova().servers.evacuate(server.id)
    # Since microversion 2.95 Nova leaves an evacuated server stopped: nobody to tell
    # until it starts again, and then the guest hears it on its new host.
    stack.wait_for_server(server.id, "SHUTOFF")
    destination = host_of(stack, server.id)
    assert destination != source
    stack.nova().servers.start(server.id)
    stack.wait_for_server(server.id, "ACTIVE")
    # No prepare: Nova evacuates a server whose host is dead, so its guest is presumed gone.
    # The evacuation is announced on the new host once the guest runs there, before the
    # start's own end.
    assert rec.wait_for(2) == [("evacuate", "end"), ("start", "end")]
    assert wait_audits(stack, server.id, audit.OPERATION, "start")[-1]["host"] == destination
    evacuated = wait_audits(stack, server.id, audit.OPERATION, "evacuate")[-1]
    assert (evacuated["outcome"], evacuated["host"]) == ("end-delivered", destination)
