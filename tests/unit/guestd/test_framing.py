"""The framing: a byte stream to messages and back, whatever the peer sends."""

import json

import pytest

from guestd import framing


def frames(*messages):
    return b"".join(framing.encode(m) for m in messages)


def test_split_reads_yield_each_message_once():
    data = frames({"type": "a", "n": 1}, {"type": "b", "n": "ü" * 10})
    decoder = framing.FrameDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert [m["type"] for m in out] == ["a", "b"]
    assert out[1]["n"] == "ü" * 10


def test_coalesced_reads_yield_all_messages():
    data = frames(*[{"type": "m", "n": i} for i in range(50)])
    assert [m["n"] for m in framing.FrameDecoder().feed(data)] == list(range(50))


def test_garbage_frame_is_reported_and_the_next_frame_survives():
    decoder = framing.FrameDecoder()
    out = decoder.feed(b"not json\n[1,2]\n" + frames({"type": "ok"}))
    assert isinstance(out[0], framing.ProtocolError)
    assert isinstance(out[1], framing.ProtocolError)  # JSON, but not an object
    assert out[2]["type"] == "ok"


def test_oversized_frame_is_dropped_once_without_buffering_it():
    decoder = framing.FrameDecoder(max_frame=100)
    out = decoder.feed(b"x" * 80)
    out += decoder.feed(b"x" * 80)  # now over the limit, no newline yet
    out += decoder.feed(b"x" * 5000)
    assert len(decoder._buffer) <= 100
    out += decoder.feed(b"tail\n" + frames({"type": "after"}))
    errors = [m for m in out if isinstance(m, framing.ProtocolError)]
    assert len(errors) == 1 and "exceeds" in str(errors[0])
    assert out[-1] == {"type": "after"}


def test_encode_refuses_what_a_peer_would_reject():
    with pytest.raises(framing.ProtocolError):
        framing.encode({"blob": "x" * framing.MAX_FRAME})


@pytest.mark.parametrize("bad", [
    {"v": 0}, {"v": "1"}, {"v": True},
])
def test_bad_versions_are_refused(bad):
    with pytest.raises(framing.ProtocolError):
        framing.decode(json.dumps(bad))
