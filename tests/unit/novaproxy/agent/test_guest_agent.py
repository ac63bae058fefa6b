import base64

import pytest

from novaproxy.agent import guest_agent


def reply(data: bytes) -> dict:
    return {"count": len(data), "buf-b64": base64.b64encode(data).decode(), "eof": True}


def test_file_contents_are_the_decoded_bytes():
    assert guest_agent.file_contents(reply(b"seq 7\n"), 64, "/run/x") == b"seq 7\n"


@pytest.mark.parametrize("hostile, why", [
    ({"count": 0, "eof": True}, "no contents"),
    ("not a dict", "no contents"),
    ({"buf-b64": 5}, "no contents"),
    ({"buf-b64": "A" * 200}, "over 64 bytes"),  # refused before decoding
    (reply(b"x" * 65), "over 64 bytes"),
    ({"buf-b64": "!!not base64!!"}, "not base64"),
])
def test_hostile_file_replies_are_refused(hostile, why):
    with pytest.raises(guest_agent.GuestAgentError, match=why):
        guest_agent.file_contents(hostile, 64, "/run/x")
