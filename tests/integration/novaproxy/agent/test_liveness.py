"""Lost hosts on a real redis-server: each agent keeps its liveness key; when one
expires, the members that host ran, in the groups of the VMs the others serve, are
announced unreachable once, by whichever agent claims each first."""

import threading
import time
import uuid

from novaproxy import peer_notify, peers, redis_schema
from novaproxy.agent import liveness
from novaproxy.groups import Group, Member
from novaproxy.redis_schema import peers as peer_keys

A, B, C, D = (str(uuid.UUID(int=n)) for n in (31, 32, 33, 34))
# A on h1, B and C on h2 (one group); D on h3, in a group of its own.
HOSTS = {A: "h1", B: "h2", C: "h2", D: "h3"}


def cache(client):
    redis_schema.cache_group(client, Group("g", "db", "anti-affinity", (A, B, C)))
    redis_schema.cache_group(client, Group("solo", "solo", "affinity", (D,)))
    for m, host in HOSTS.items():
        redis_schema.cache_member(client, Member(m, True, True, "ACTIVE", host,
                                                 "solo" if m == D else "g"))


def agent(client, host, told, served):
    return liveness.Liveness(client, host, peer_notify.CachedMembership(client),
                             lambda: served, lambda *notice: told.append(notice),
                             threading.Event())


def expire(client, host):
    client.pexpire(peer_keys.alive_key(host), 1)
    time.sleep(0.05)


def test_a_host_whose_agent_stopped_has_its_members_announced_once(redis_client):
    cache(redis_client)
    told = []
    h1, h1_again = agent(redis_client, "h1", told, {A}), agent(redis_client, "h1", told, {A})
    h2, h3 = (agent(redis_client, h, told, served) for h, served in (("h2", {B, C}),
                                                                      ("h3", {D})))
    for a in (h1, h2, h3):
        assert a.round() == []  # all alive
    assert redis_client.pttl(peer_keys.alive_key("h1")) <= peer_keys.LIVENESS_TTL_MS
    expire(redis_client, "h2")
    assert sorted(h1.round()) == [B, C]
    assert sorted(told) == sorted([(B, peers.UNREACHABLE, "host h2 stopped answering"),
                                   (C, peers.UNREACHABLE, "host h2 stopped answering")])
    assert h1.round() == [] and h1_again.round() == []  # once, whichever agent asks
    assert h3.round() == []  # its VMs' group has nobody on h2
    assert len(told) == 2
    # h2's agent comes back (a new run), then goes again: announced again.
    h2_new = agent(redis_client, "h2", told, {B, C})
    h2_new.round()
    assert h1.round() == []
    expire(redis_client, "h2")
    assert sorted(h1.round()) == [B, C]


def test_announced_members_reach_the_peers_through_the_notifier(redis_client):
    cache(redis_client)
    notifier = peer_notify.Notifier(redis_client, peer_notify.CachedMembership(redis_client),
                                    lambda: redis_schema.redis_time(redis_client))
    h1 = liveness.Liveness(redis_client, "h1", peer_notify.CachedMembership(redis_client),
                           lambda: {A}, notifier.notify, threading.Event())
    h2 = agent(redis_client, "h2", [], {B, C})
    h1.round()
    h2.round()
    expire(redis_client, "h2")
    h1.round()
    deadline = time.monotonic() + 5
    while len(peer_keys.waiting_notices(redis_client, A)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    states = {n["peer"]: n["state"] for _, n in peer_keys.waiting_notices(redis_client, A)}
    assert states == {B: peers.UNREACHABLE, C: peers.UNREACHABLE}


class Counting(peer_notify.CachedMembership):
    """The cache, counting the fresh reads of groups (Nova's, in an agent)."""

    def __init__(self, client):
        super().__init__(client)
        self.fresh = []

    def group(self, gid, fresh=False):
        if fresh:
            self.fresh.append(gid)
        return super().group(gid, fresh)


def test_the_served_vms_groups_are_read_again_so_their_cache_never_lapses(
        redis_client, monkeypatch):
    cache(redis_client)
    members, served = Counting(redis_client), {B, C}
    h2 = liveness.Liveness(redis_client, "h2", members, lambda: set(served),
                           lambda *notice: None, threading.Event())
    h2.round()
    assert members.fresh == ["g"]  # once per group, at the first round
    h2.round()
    served.discard(C)
    h2.round()
    assert members.fresh == ["g"]  # not again within REFRESH, a VM gone or not
    served.add(D)  # a VM just booted here: its group may list it only now
    h2.round()
    assert members.fresh == ["g", "g", "solo"]
    monkeypatch.setattr(liveness, "REFRESH", 0.0)
    h2.round()
    assert members.fresh == ["g", "g", "solo", "g", "solo"]


def test_an_agent_back_after_its_loss_tells_its_vms_groups_they_are_reachable(redis_client):
    cache(redis_client)
    told = []
    h1 = agent(redis_client, "h1", told, {A})
    h2 = agent(redis_client, "h2", [], {B, C})
    h1.round()
    h2.round()
    expire(redis_client, "h2")
    assert sorted(h1.round()) == [B, C]
    back, told_back = [], []
    h2_new = agent(redis_client, "h2", told_back, {B, C, D})  # D came meanwhile
    h2_new.round()
    assert told_back == [(B, peers.REACHABLE, "host h2 answers again"),
                         (C, peers.REACHABLE, "host h2 answers again")]
    h2_new.round()
    agent(redis_client, "h2", back, {B, C}).round()  # restarted while alive: nothing
    assert len(told_back) == 2 and back == []


def test_an_agent_frozen_past_its_key_tells_its_vms_groups_they_are_reachable(redis_client):
    cache(redis_client)
    h1, told = agent(redis_client, "h1", [], {A}), []
    h2 = agent(redis_client, "h2", told, {B, C})
    h1.round()
    h2.round()
    expire(redis_client, "h2")  # h2's agent frozen (SIGSTOP), or cut off from Redis
    assert sorted(h1.round()) == [B, C]
    h2.round()  # it resumes
    assert told == [(B, peers.REACHABLE, "host h2 answers again"),
                    (C, peers.REACHABLE, "host h2 answers again")]
    h2.round()
    assert len(told) == 2
