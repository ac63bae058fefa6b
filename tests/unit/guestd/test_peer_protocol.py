"""guestd's side of peer notices: the details checked, stale notices not handed out."""

import uuid

import pytest

from guestd import peer_protocol, protocol
from guestd.groups import GroupRequests
from guestd.registry import Registry

A = str(uuid.UUID(int=1))


def details(**changes):
    return {"peer": A, "name": "vm-1", "state": "failed", "cause": "hung", "since": 10.0,
            "seq": 2, **changes}


def test_details_are_checked():
    assert peer_protocol.parse_peer_details(details()) == details()
    assert peer_protocol.parse_peer_details(details(peer=A.upper()))["peer"] == A
    for bad in ({"peer": "x"}, {"seq": 0}, {"seq": True}, {"since": -1}, {"state": ""},
                {"state": 5}, {"cause": "c" * (protocol.MAX_REASON + 1)}):
        with pytest.raises(protocol.ProtocolError):
            peer_protocol.parse_peer_details(details(**bad))


def test_a_notice_as_the_application_gets_it():
    message = peer_protocol.peer_notice(details())
    assert message["type"] == peer_protocol.PEER_NOTICE
    notice = peer_protocol.PeerNotice.of(message)
    assert (notice.peer, notice.state, notice.cause, notice.seq) == (A, "failed", "hung", 2)


class Recorder:
    """An application registered for ``group``, as the registry sees one."""

    name = "app"

    def __init__(self):
        self.got = []

    def wants(self, event):
        return event == protocol.GROUP

    def send(self, message):
        self.got.append(message)
        return True


def request(seq, state="failed"):
    return protocol.request(f"peer-{A}-{seq}", str(uuid.UUID(int=9)), protocol.GROUP,
                            protocol.PEER, 2.0, details(seq=seq, state=state))


def test_a_stale_notice_is_answered_but_not_handed_out(tmp_path):
    registry = Registry()
    app = Recorder()
    registry.add(app)
    requests = GroupRequests(registry, None, str(tmp_path))
    assert requests.handle(request(3, "healthy"))["result"] == protocol.ACCEPT
    # Stale: a newer state was handed out; reject, which the host counts as had.
    assert requests.handle(request(2, "failed"))["result"] == protocol.REJECT
    assert requests.handle(request(3, "healthy"))["result"] == protocol.REJECT
    assert [(m["state"], m["seq"]) for m in app.got] == [("healthy", 3)]


def test_malformed_peer_details_get_an_error():
    requests = GroupRequests(Registry(), None, None)
    answer = requests.handle(protocol.request("r", A, protocol.GROUP, protocol.PEER, 2.0,
                                              {"peer": "nope"}))
    assert answer["type"] == protocol.FAILURE
