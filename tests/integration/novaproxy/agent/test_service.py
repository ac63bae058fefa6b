"""The agent between a real redis-server and real qemu-ga + guestd guests."""

import json
import threading
import time
import uuid

import pytest

from guestd import protocol
from guestd.client import Application, Vote
from harness.guest import SPOOL_DIR, write_guestd_ctl
from novaproxy import redis_schema
from novaproxy.agent import hypervisor
from novaproxy.agent.config import AgentConfig
from novaproxy.agent.service import Agent

HOST = "compute-t"
REPLIES = redis_schema.replies_stream("test")


@pytest.fixture
def run_agent(redis_client, redis_server, make_guest, short_dir):
    agents = []
    config = AgentConfig(host=HOST, redis_url=redis_server.url, hypervisor="qga-socket",
                         qga_socket_dir=make_guest.socket_dir, libvirt_uri="",
                         guestd_ctl=tuple(write_guestd_ctl(f"{short_dir}/guestd-ctl")),
                         workers=4, route_interval=0.2, operation_interval=1.0, nova={},
                         spool_dir=SPOOL_DIR)

    def start():
        agent = Agent(config, hypervisor.QgaSocketDirectory(config.qga_socket_dir),
                      redis_schema.connect(redis_server.url))
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        agent.thread = thread
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stopping.set()
        agent.thread.join(5)


def wait_reply(client, rid, timeout=10):
    deadline = time.monotonic() + timeout
    last = "0-0"
    while time.monotonic() < deadline:
        for entry_id, reply in redis_schema.read_replies(client, REPLIES, last, 200):
            last = entry_id
            if reply.id == rid:
                return reply
    raise AssertionError(f"no reply for {rid}")


def ask(client, instance, timeout=3.0, phase="vote"):
    req = protocol.request(uuid.uuid4().hex, instance, "reboot", phase, timeout)
    redis_schema.enqueue(client, HOST, req, REPLIES)
    return req["id"]


def test_vote_round_trip_and_route(redis_client, make_guest, run_agent):
    guest = make_guest()
    Application("db", on_vote=lambda n: Vote.reject("busy"),
                socket_path=guest.guestd_socket).start().registered.wait(5)
    run_agent()
    deadline = time.monotonic() + 5
    while redis_schema.route_of(redis_client, guest.instance) != HOST:
        assert time.monotonic() < deadline, "route not published"
        time.sleep(0.05)
    reply = wait_reply(redis_client, ask(redis_client, guest.instance))
    assert (reply.outcome, reply.instance, reply.host) == ("reject", guest.instance, HOST)
    assert reply.voters == [{"name": "db", "vote": "reject", "reason": "busy"}]
    # The audit event follows the reply (the proxy is not kept waiting for it).
    events = redis_schema.read_events(redis_client, 10, after="0-0", block_ms=2000)
    assert events[-1][1]["kind"] == "guest-answer" and events[-1][1]["outcome"] == "reject"


def test_route_is_withdrawn_when_the_guest_leaves(redis_client, make_guest, run_agent):
    guest = make_guest()
    run_agent()
    deadline = time.monotonic() + 5
    while redis_schema.route_of(redis_client, guest.instance) != HOST:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    guest.stop()
    while redis_schema.route_of(redis_client, guest.instance) is not None:
        assert time.monotonic() < deadline + 5, "route not withdrawn"
        time.sleep(0.05)


def test_unknown_instance_is_unreachable(redis_client, run_agent):
    run_agent()
    reply = wait_reply(redis_client, ask(redis_client, str(uuid.uuid4())))
    assert reply.outcome == "unreachable"


def test_guest_without_guestd_is_not_negotiating(redis_client, make_guest, run_agent):
    guest = make_guest()
    guest.guestd.stop()
    run_agent()
    assert wait_reply(redis_client, ask(redis_client, guest.instance)).outcome == "not-negotiating"


def test_restarted_agent_answers_what_it_had_taken(redis_client, make_guest, run_agent):
    guest = make_guest()
    redis_schema.ensure_group(redis_client, HOST)
    rid = ask(redis_client, guest.instance, timeout=10)
    # A previous agent took the request and died before answering.
    taken = redis_schema.take_requests(redis_client, HOST, HOST, pending=False, block_ms=100)
    assert [req["id"] for _, req, _ in taken] == [rid]
    run_agent()
    assert wait_reply(redis_client, rid).outcome == "accept"
    assert redis_client.xpending(redis_schema.requests_stream(HOST),
                                 redis_schema.AGENT_GROUP)["pending"] == 0


def test_request_past_its_deadline_is_expired(redis_client, make_guest, run_agent):
    guest = make_guest()
    rid = ask(redis_client, guest.instance, timeout=0.5)
    time.sleep(0.6)
    run_agent()
    assert wait_reply(redis_client, rid).outcome == "expired"


def test_malformed_entries_are_dropped_and_the_agent_carries_on(redis_client, make_guest,
                                                                 run_agent):
    guest = make_guest()
    stream = redis_schema.requests_stream(HOST)
    redis_client.xadd(stream, {"request": "{not json", "reply_to": REPLIES})
    redis_client.xadd(stream, {"request": json.dumps({"type": "request"}), "reply_to": REPLIES})
    redis_client.xadd(stream, {"nothing": "here"})
    agent = run_agent()
    assert wait_reply(redis_client, ask(redis_client, guest.instance)).outcome == "accept"
    assert agent.thread.is_alive()


def test_hung_guest_agent_times_out_within_the_deadline(redis_client, make_guest, run_agent):
    import signal

    guest = make_guest()
    run_agent()
    guest.qemu_ga.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        reply = wait_reply(redis_client, ask(redis_client, guest.instance, timeout=1.0))
        assert reply.outcome == "timeout"
        assert time.monotonic() - started < 1.0 + 0.3
    finally:
        guest.qemu_ga.signal(signal.SIGCONT)
