"""Faults from inside the guest: more applications than one answer lists, and a hostile
guest's outputs. Neither may turn a NACK into consent, nor make anything but the guest's
own valid answer count as its vote.

On the session's real stack (redis-server, Nova's API, agents in qga-socket mode,
novaproxy-api, qemu-ga + guestd per server). The hostile guest is a real adversary in
guestd's place, behind the guest's real qemu-ga: it takes the agent's requests from the
spool (guest-file-* RPCs) or answers guestd-ctl (run by guest-exec) on guestd's socket,
and writes whatever it likes back.
"""

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from novaclient import exceptions

from guestd import protocol
from guestd.client import Vote
from harness.proxies import start_proxy

pytestmark = pytest.mark.system

# The flavors' vote deadline: the paste's for the crowd, the flavor's own for hostile
# guests. Each answer must reach the client within it plus MARGIN: the agent's and the
# proxy's own work, and Nova's, on a loaded two-core machine.
PASTE_VOTE_TIMEOUT = 10.0
HOSTILE_VOTE_TIMEOUT = 3.0
MARGIN = 2.0


def reboots(stack, server) -> int:
    return [a.action for a in stack.nova(direct=True).instance_action.list(server)].count(
        "reboot")


# --- more voters than an answer lists ------------------------------------------------


def test_one_nack_among_150_applications_reaches_the_client_and_nova_does_nothing(
        stack, negotiated_flavor, recorder):
    """guestd used to list all 152 voters; the agent refused the answer as invalid and
    `unreachable = accept` let Nova reboot a server whose guest said no."""
    server, _ = stack.boot("crowd", negotiated_flavor)
    guest = stack.guests[server.id]
    crowd = [recorder(guest, name=f"app{i:03}") for i in range(149)]
    db = recorder(guest, name="db", verdict=lambda n: Vote.reject("replication in progress"))
    started = time.monotonic()
    with pytest.raises(exceptions.Conflict) as raised:
        stack.nova().servers.reboot(server)
    took = time.monotonic() - started
    assert "action-rejected" in str(raised.value)
    assert "db: replication in progress" in str(raised.value)
    assert took < PASTE_VOTE_TIMEOUT + MARGIN, took
    assert db.seen == [("reboot", "vote")]
    assert all(app.seen == [("reboot", "vote")] for app in crowd)
    assert reboots(stack, server) == 0
    assert stack.nova(direct=True).servers.get(server.id).status == "ACTIVE"


# --- a hostile guest ---------------------------------------------------------------------


class HostileGuestd:
    """In guestd's place: every request, whether taken from the spool or relayed by
    guestd-ctl to guestd's socket, is answered with ``output(request)``."""

    def __init__(self, guest, output) -> None:
        guest.guestd.stop()
        self.guest, self.output = guest, output
        self.requests: list = []  # (how it came, the request)
        self._stopping = threading.Event()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(guest.guestd_socket)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(guest.guestd_socket)
        self._listener.listen(8)
        for target in (self._serve_socket, self._serve_spool):
            threading.Thread(target=target, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()

    def _serve_socket(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with conn, contextlib.suppress(OSError, ValueError):
                data = b""
                while b"\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                req = json.loads(data.split(b"\n")[0])
                self.requests.append(("socket", req))
                conn.sendall(self.output(req))

    def _serve_spool(self) -> None:
        spool_dir = self.guest.spool_dir
        while not self._stopping.wait(0.005):
            with contextlib.suppress(OSError, ValueError):  # gone, or a half-written file
                for name in os.listdir(spool_dir):
                    if name.endswith(protocol.REQ_SUFFIX):
                        self._take(os.path.join(spool_dir, name))

    def _take(self, path: str) -> None:
        with open(path, "rb") as f:
            data = f.read()
        if not data.endswith(b"\n"):
            return  # qemu-ga is still writing it
        os.unlink(path)
        req = json.loads(data)
        self.requests.append(("spool", req))
        answer = path[:-len(protocol.REQ_SUFFIX)] + protocol.ANS_SUFFIX
        with open(answer + ".tmp", "wb") as f:
            f.write(self.output(req))
        os.replace(answer + ".tmp", answer)


NACK = protocol.voter("db", "reject", "replication in progress")


def claiming(result: str):
    """Outputs claiming ``result`` (with a NACK behind a reject), none of them a valid
    answer to the request it answers."""
    voters = [NACK] if result == protocol.REJECT else []

    def answer(req: dict, **change) -> dict:
        return {**protocol.answer(req, result, voters), **change}

    return {
        "another request id": lambda req: protocol.encode(answer(req, id=uuid.uuid4().hex)),
        "another instance": lambda req: protocol.encode(answer(req, instance=str(uuid.uuid4()))),
        "oversized": lambda req: json.dumps(
            {**answer(req), "padding": "x" * protocol.MAX_FRAME}).encode() + b"\n",
        "garbage": lambda req: b"\x00\xff" * 100 + b"\n",
        "not an answer": lambda req: protocol.encode(req),
    }


def older_guestd(result: str, voters: list):
    """What guestd answered before it listed at most MAX_VOTERS: every voter."""
    def output(req: dict) -> bytes:
        answer = {**protocol.answer(req, result), "voters": voters}
        answer.pop("voters_total", None)
        return protocol.encode(answer)

    return output


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500


@pytest.fixture(scope="module")
def strict_nova(stack):
    """A novaclient through a second novaproxy-api in front of the same Redis and Nova,
    with ``unreachable = reject``."""
    with start_proxy(stack, "unreachable-reject", unreachable="reject") as proxy:
        yield proxy.nova()


@pytest.fixture(scope="module")
def hostile_flavor(stack):
    return stack.flavor(f"hostile-{uuid.uuid4().hex[:6]}", {
        "guest:negotiation": "true", "guest:vote_timeout": str(HOSTILE_VOTE_TIMEOUT)})


@pytest.fixture
def hostile(stack, hostile_flavor):
    """A server whose guest runs a :class:`HostileGuestd` (its output set per case)."""
    server, _ = stack.boot("hostile", hostile_flavor)
    guest = stack.guests[server.id]
    adversary = HostileGuestd(guest, output=None)
    yield server, guest, adversary
    adversary.stop()


@pytest.mark.parametrize("way", ["spool", "guest-exec"])
def test_a_listed_nack_is_honoured_however_long_the_list_and_whatever_the_result(
        stack, hostile, way):
    """An older guestd's 152 voters (its NACK past the 64th), and a guest that lists a
    NACK yet answers accept: each is the guest's valid answer, and so a rejection."""
    server, guest, adversary = hostile
    if way == "guest-exec":
        shutil.rmtree(guest.spool_dir)
    crowd = [protocol.voter(f"app{i:03}", "accept") for i in range(151)]
    for case, output in {"152 voters": older_guestd("reject", crowd[:100] + [NACK] + crowd[100:]),
                         "accept with a NACK": older_guestd("accept", crowd[:10] + [NACK])
                         }.items():
        adversary.output = output
        started = time.monotonic()
        with pytest.raises(exceptions.Conflict) as raised:
            stack.nova().servers.reboot(server)
        took = time.monotonic() - started
        assert "db: replication in progress" in str(raised.value), case
        assert took < HOSTILE_VOTE_TIMEOUT + MARGIN, (case, took)
    assert reboots(stack, server) == 0
    assert {how for how, _ in adversary.requests} == {"spool" if way == "spool" else "socket"}


@pytest.mark.parametrize("way", ["spool", "guest-exec"])
@pytest.mark.parametrize("unreachable", ["accept", "reject"])
def test_hostile_outputs_follow_unreachable_and_never_count_as_a_vote(
        stack, strict_nova, hostile, way, unreachable):
    server, guest, adversary = hostile
    if way == "guest-exec":
        shutil.rmtree(guest.spool_dir)  # no spool: the agent falls back to guest-exec
    nova = stack.nova() if unreachable == "accept" else strict_nova
    # Each output claims the opposite of what the policy decides.
    claim = protocol.REJECT if unreachable == "accept" else protocol.ACCEPT
    for case, output in claiming(claim).items():
        adversary.output = output
        asked = len(adversary.requests)
        before = reboots(stack, server)
        started = time.monotonic()
        if unreachable == "accept":
            nova.servers.reboot(server)
            took = time.monotonic() - started
            stack.wait_for_server(server.id, "ACTIVE")
            assert reboots(stack, server) == before + 1, case
        else:
            with pytest.raises(exceptions.Conflict) as raised:
                nova.servers.reboot(server)
            took = time.monotonic() - started
            assert "action-rejected" in str(raised.value), case
            assert "could not be asked (invalid" in str(raised.value), case
            assert "db:" not in str(raised.value), case
            assert reboots(stack, server) == before, case
        assert took < HOSTILE_VOTE_TIMEOUT + MARGIN, (case, took)
        # The vote came to the hostile guest, the way this test plays (end notices of
        # the reboot before may come too).
        votes = [(how, req["instance"]) for how, req in adversary.requests[asked:]
                 if req["phase"] == protocol.VOTE]
        assert votes == [("spool" if way == "spool" else "socket", server.id)], case
