"""The proxy's peer notices under WebTest, against the real Nova fixture (a real server
group), real Redis, real agents and real qemu-ga + guestd guests: a member stopped
through the proxy is told to its peer as prepared before Nova's action exists, then
as ended once an agent judges the stop done, while the member is still off (its own
end notice waits until it runs again)."""

import json
import os
import threading
import uuid

import pytest
import webtest

from guestd.client import Application
from harness.groups import delete_group, server_group, wait_known
from harness.processes import wait_for
from novaproxy import flavor
from novaproxy.api.server import load

TOKEN = {"X-Auth-Token": "admin:demo"}


@pytest.fixture(scope="module")
def proxy(stack, session_dir):
    path = os.path.join(session_dir, f"paste-peers-{uuid.uuid4().hex[:6]}.ini")
    stack.write_paste(path)
    return webtest.TestApp(load(path))


@pytest.fixture
def group(stack):
    gid = server_group(stack, "affinity")
    yield gid
    delete_group(stack, gid)


@pytest.fixture(scope="module")
def negotiated_messaging(stack):
    return stack.flavor(f"neg-msg-{uuid.uuid4().hex[:6]}",
                        {flavor.GROUP_MESSAGING: "true", "guest:negotiation": "true"})


class Peer:
    """A member's application: the peer notices it gets and the phases it sees."""

    def __init__(self, guest, on_prepare=None):
        self.notices, self.phases = [], []
        self._lock = threading.Lock()
        self._on_prepare = on_prepare or (lambda notice: None)
        self.app = Application(f"peer-{uuid.uuid4().hex[:6]}", on_peer=self._peer,
                               on_notice=self._notice,
                               socket_path=guest.guestd_socket).start()
        assert self.app.registered.wait(5)

    def _peer(self, notice):
        with self._lock:
            self.notices.append(notice)

    def _notice(self, notice):
        self.phases.append((notice.event, notice.phase))
        if notice.phase == "prepare":
            self._on_prepare(notice)

    def states(self, peer):
        with self._lock:
            return [n.state for n in self.notices if n.peer == peer]


def test_a_stop_through_the_proxy_is_told_prepared_before_nova_acts_then_ended(
        stack, proxy, group, negotiated_messaging):
    a, _ = stack.boot("stop-a", negotiated_messaging, group=group)
    b, _ = stack.boot("stop-b", negotiated_messaging, group=group)
    wait_known(stack, group, {a.id, b.id}, group_cached=True)  # the proxy reads it
    ears = Peer(stack.guests[b.id])
    at_prepare = {}

    def prepared(notice):  # A's prepare: Nova is not asked yet; B hears of it meanwhile
        try:  # within the prepare's own deadline (a loaded machine is slow)
            at_prepare["told"] = wait_for(lambda: "stop prepared" in ears.states(a.id),
                                          max(notice.timeout - 2, 1), "the prepared notice")
        finally:
            at_prepare["actions"] = stack.instance_actions(a.id)

    stopped = Peer(stack.guests[a.id], on_prepare=prepared)
    proxy.post(f"/v2.1/servers/{a.id}/action", json.dumps({"os-stop": None}),
               headers={**TOKEN, "Content-Type": "application/json"}, status=202)
    assert at_prepare.get("told") and "stop" not in at_prepare["actions"]
    stack.wait_for_server(a.id, "SHUTOFF")
    wait_for(lambda: "stop ended" in ears.states(a.id), 30, "the ended notice")
    states = ears.states(a.id)
    assert states.index("stop prepared") < states.index("stop ended")
    assert stack.nova(direct=True).servers.get(a.id).status == "SHUTOFF"
    assert ("stop", "end") not in stopped.phases  # its own end notice waits for its start
    stack.nova(direct=True).servers.start(a.id)
    wait_for(lambda: ("stop", "end") in stopped.phases, 30, "the stopped member's end notice")
    assert ears.states(a.id).count("stop ended") == 1
    assert ears.states(b.id) == []  # nobody tells a member about itself
    for p in (ears, stopped):
        p.app.stop()


def test_an_operation_nova_refuses_after_the_prepare_is_told_aborted(
        stack, proxy, group, negotiated_messaging):
    a, _ = stack.boot("abort-a", negotiated_messaging, group=group)
    b, _ = stack.boot("abort-b", negotiated_messaging, group=group)
    wait_known(stack, group, {a.id, b.id}, group_cached=True)  # the proxy reads it
    ears = Peer(stack.guests[b.id])
    # Nova refuses a resize to the flavor the server already has, after the prepare.
    proxy.post(f"/v2.1/servers/{a.id}/action",
               json.dumps({"resize": {"flavorRef": negotiated_messaging.id}}),
               headers={**TOKEN, "Content-Type": "application/json"}, status=400)
    wait_for(lambda: "resize aborted" in ears.states(a.id), 20, "the aborted notice")
    states = ears.states(a.id)
    assert "resize prepared" not in states or (
        states.index("resize prepared") < states.index("resize aborted"))
    told = [n for n in ears.notices if n.state == "resize aborted"]
    assert told[0].cause == "Nova answered HTTP 400"
    ears.app.stop()
