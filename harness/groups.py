"""Server-group messaging as the system tests drive it: applications in the guests
(the real guestd client API) that record what they are told, the outbox file a hostile
guest may write instead of guestd, and an agent killed without warning.

Every wait is bounded (:func:`harness.processes.wait_for`); what is compared is what
the applications saw, in their callbacks.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

from guestd import group_protocol as gp
from guestd.client import Application
from harness.processes import wait_for
from novaproxy import redis_schema


class Member:
    """A group application in one guest, recording the messages, results and peer
    notices it gets."""

    def __init__(self, guest, host: str = "", name: str = "db") -> None:
        self.instance, self.host = guest.instance, host
        self.messages: list = []
        self.results: list = []
        self.notices: list = []  # (time.time() at the callback, PeerNotice)
        self._lock = threading.Lock()
        self.app = Application(name, events=(), on_message=self._message,
                               on_result=self._result, on_peer=self._peer,
                               socket_path=guest.guestd_socket).start()
        assert self.app.registered.wait(5), f"no group application in {guest.instance}"

    def _message(self, message) -> None:
        with self._lock:
            self.messages.append(message)

    def _result(self, result) -> None:
        with self._lock:
            self.results.append(result)

    def _peer(self, notice) -> None:
        with self._lock:
            self.notices.append((time.time(), notice))

    def of(self, peer: str) -> list:
        """The notices about ``peer``, in the order they came."""
        with self._lock:
            return [n for _, n in self.notices if n.peer == peer]

    def heard(self, peer: str, state: str, timeout: float = 30):
        """Wait for a notice that ``peer`` is in ``state``; (when it came, the notice)."""
        def found():
            with self._lock:
                return next(((at, n) for at, n in self.notices
                             if n.peer == peer and n.state == state), None)
        return wait_for(found, timeout, f"{self.instance} told {peer} is {state!r}")

    def from_(self, sender: str) -> list:
        """The bodies ``sender`` sent this application, in the order they arrived."""
        with self._lock:
            return [m.body for m in self.messages if m.sender == sender]

    def got(self, expected: dict, timeout: float = 30) -> None:
        """Wait until at least as many messages as ``expected`` (sender -> bodies) came
        from each sender; then every message seen is one of them, once, in order."""
        wait_for(lambda: all(len(self.from_(s)) >= len(b) for s, b in expected.items()),
                 timeout, f"{self.instance}'s messages from {len(expected)} sender(s)")
        with self._lock:
            seen = list(self.messages)
        assert {m.sender: [n.body for n in seen if n.sender == m.sender]
                for m in seen} == {s: b for s, b in expected.items() if b}
        assert len({m.id for m in seen}) == len(seen), "a message seen twice"

    def arrived(self, count: int, timeout: float = 30) -> list:
        """The first ``count`` messages, once that many arrived."""
        def enough():
            with self._lock:
                return len(self.messages) >= count and self.messages[:count]
        return wait_for(enough, timeout, f"{count} message(s) to {self.instance}")

    def told(self, seqs, timeout: float = 30) -> dict:
        """seq -> result, once every one of ``seqs`` has its result."""
        def ready():
            with self._lock:  # the first result of each seq: accepted or refused
                by_seq = {r.seq: r for r in reversed(self.results)}
            return set(seqs) <= set(by_seq) and by_seq
        return wait_for(ready, timeout, f"{self.instance}'s results of {sorted(seqs)}")

    def final(self, seqs, timeout: float = 30) -> dict:
        """seq -> final result (delivered or expired), once every one of ``seqs`` has
        it; each seq's final result came once."""
        def ready():
            with self._lock:
                finals = [r for r in self.results if r.status in (gp.DELIVERED, gp.EXPIRED)]
            by_seq = {r.seq: r for r in finals}
            assert len(by_seq) == len(finals), "a final result told twice"
            return set(seqs) <= set(by_seq) and by_seq
        return wait_for(ready, timeout, f"{self.instance}'s final results of {sorted(seqs)}")

    def stop(self) -> None:
        self.app.stop()


def boot_members(stack, flavor, gid: str, count: int = 3, prefix: str = "g") -> list:
    """``count`` servers booted into group ``gid`` over both of the stack's hosts, each
    with a :class:`Member` application (stop them with :meth:`Member.stop`)."""
    booted = [stack.boot(f"{prefix}-{n}", flavor, group=gid) for n in range(count)]
    assert {host for _, host in booted} == set(stack.computes), "the group spans both hosts"
    members = [Member(stack.guests[server.id], host) for server, host in booted]
    wait_known(stack, gid, {m.instance for m in members})
    return members


def wait_known(stack, gid: str, members: set, timeout: float = 20,
               group_cached: bool = False) -> None:
    """Wait until the agents' membership cache holds ``members``, each taking messages,
    and group ``gid`` with all of them if it is cached (``group_cached``: it must be, for
    the proxy, which reads the cache alone). A member is a recipient from then on: its
    agent reads it from Nova within a poll of serving it, and a message taken before
    went to the others only, as its delivery report says."""
    client = redis_schema.connect(stack.redis.url)
    try:
        def known() -> bool:
            group = redis_schema.cached_group(client, gid)
            cached = redis_schema.cached_members(client, sorted(members))
            return ((members <= set(group.members) if group is not None else not group_cached)
                    and all(m in cached and cached[m].messaging for m in members))
        wait_for(known, timeout, f"group {gid} with its {len(members)} members in the cache")
    finally:
        client.close()


def apart(members: list) -> tuple:
    """(the two members that share a host, the one alone on the other host)."""
    by_host: dict = {}
    for m in members:
        by_host.setdefault(m.host, []).append(m)
    pair, = (ms for ms in by_host.values() if len(ms) == 2)
    alone, = (ms[0] for ms in by_host.values() if len(ms) == 1)
    return pair, alone


def server_group(stack, policy: str = "soft-anti-affinity", name: str = "") -> str:
    """A new Nova server group (delete it with ``delete_group``); its id."""
    admin = stack.nova(direct=True)
    return admin.server_groups.create(name or f"sys-{uuid.uuid4().hex[:6]}", policy=policy).id


def delete_group(stack, gid: str) -> None:
    stack.nova(direct=True).server_groups.delete(gid)


def wait_reported(client, gid: str, message_ids, states: dict, timeout: float = 30) -> None:
    """Wait until the delivery report of each of ``message_ids`` is ``states``."""
    wait_for(lambda: all(redis_schema.report(client, gid, mid, time.time()) == states
                         for mid in message_ids), timeout, "the delivery reports")


def write_outbox(guest, data: bytes) -> None:
    """Replace ``guest``'s outbox file with ``data``, atomically, as a hostile guest
    could (guestd rewrites it only when its own outbox changes)."""
    tmp = guest.outbox_file + ".hostile"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, guest.outbox_file)


def outbox_json(epoch: str, entries: list) -> bytes:
    return json.dumps({"v": 1, "epoch": epoch, "messages": entries}).encode()


def log_lines(path: str, *words: str) -> int:
    """How many lines of the log at ``path`` hold every one of ``words``."""
    with open(path, errors="replace") as f:
        return sum(all(w in line for w in words) for line in f)


def kill_agent(stack, host: str):
    """SIGKILL ``host``'s agent (no chance to finish anything) and wait until it is gone;
    ``stack.restart_agent(host)`` starts it again."""
    agent = stack.agents[host]
    agent.signal(signal.SIGKILL)
    wait_for(lambda: not agent.alive(), 10, f"the agent of {host} gone")
    return agent
