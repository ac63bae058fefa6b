"""How messages travel as bytes: the framing under :mod:`guestd.protocol`.

On the guestd socket, in a spool file and in the status file: one JSON object per
line (UTF-8, ``\\n`` terminated, at most :data:`MAX_FRAME` bytes). JSON never
contains a raw newline, so a reader can always resynchronise at the next one,
whatever arrives. Between the host and ``guestd-ctl`` a message is one JSON document
on stdin or stdout.

This module imports nothing at load time, and ``json`` only when it first encodes or
decodes: ``guestd-ctl`` imports it on every host request, relays raw frames, and
``import json`` alone would double its start-up time.
"""

from __future__ import annotations

MAX_FRAME = 64 * 1024


class ProtocolError(ValueError):
    """A message that does not follow the protocol."""


def compact(message: dict) -> bytes:
    """A frame's contents, without its newline."""
    import json

    # A lone surrogate (JSON escapes allow one, UTF-8 does not) from a peer's text
    # becomes "?" rather than making the whole message, or every status write, fail.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode(
        errors="replace")


def encode(message: dict) -> bytes:
    """One frame: compact JSON and a newline; refuses what a peer would reject."""
    data = compact(message)
    if len(data) >= MAX_FRAME:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_FRAME}")
    return data + b"\n"


def decode(data: bytes | str) -> dict:
    """One message from one frame or document: a JSON object of protocol version ≥ 1
    (a message without ``v`` is version 1)."""
    import json

    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # nesting too deep too
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    version = message.get("v", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProtocolError(f"bad protocol version {version!r}")
    return message


class FrameDecoder:
    """Turns a byte stream into messages, whatever the read boundaries.

    ``feed`` returns the messages completed by ``data`` and, in their place,
    a :class:`ProtocolError` for every frame that was garbage or too long; a
    bad frame never costs the frames after it.
    """

    def __init__(self, max_frame: int = MAX_FRAME, raw: bool = False) -> None:
        self._max = max_frame
        self._raw = raw  # hand out frames as bytes, undecoded (guestd-ctl relays them)
        self._buffer = bytearray()
        self._discarding = False  # inside an oversized frame, until its newline

    def feed(self, data: bytes) -> list:
        out: list = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    if not self._discarding:
                        out.append(ProtocolError(f"frame exceeds {self._max} bytes"))
                    self._discarding = True
                    self._buffer.clear()
                return out
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(frame) > self._max:
                out.append(ProtocolError(f"frame exceeds {self._max} bytes"))
            elif frame.strip() and self._raw:
                out.append(frame)
            elif frame.strip():
                try:
                    out.append(decode(frame))
                except ProtocolError as exc:
                    out.append(exc)
