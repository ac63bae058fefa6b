"""guestd-ctl: the one command the host runs in the guest (through qemu-ga guest-exec).

Reads one request as JSON on stdin, hands it to guestd and prints guestd's
answer as JSON on stdout. With no guestd to reach, the answer is
"not-negotiating": a guest that does not take part is not a guest that timed out.

Kept lean on purpose: its start-up time is paid by every negotiation.
"""

from __future__ import annotations

import _socket  # not ``socket``: its enum/selectors imports double our start-up time
import os
import sys

from guestd import protocol

DEFAULT_SOCKET = "/run/guestd/guestd.sock"
# Beyond the request's own timeout, how long to wait for guestd's answer.
GRACE = 1.0


def _socket_path(argv: list) -> str:
    if len(argv) >= 2 and argv[0] == "--socket":
        return argv[1]
    return os.environ.get("GUESTD_SOCKET", DEFAULT_SOCKET)


def exchange(path: str, req: dict) -> dict:
    """Send ``req`` to guestd at ``path``; its answer, or not-negotiating."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(req["timeout"] + GRACE)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return protocol.answer(req, protocol.NOT_NEGOTIATING)
    try:
        sock.sendall(protocol.encode(req))
        decoder = protocol.FrameDecoder()
        while True:
            data = sock.recv(65536)
            if not data:
                raise protocol.ProtocolError("guestd closed without answering")
            for message in decoder.feed(data):
                if isinstance(message, protocol.ProtocolError):
                    raise message
                if message.get("type") == protocol.FAILURE:
                    raise protocol.ProtocolError(f"guestd: {message.get('message')}")
                return message
    finally:
        sock.close()


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        req = protocol.parse_request(protocol.decode(sys.stdin.buffer.read(protocol.MAX_FRAME)))
        reply = exchange(_socket_path(argv), req)
    except (protocol.ProtocolError, OSError) as exc:
        sys.stdout.write(protocol.encode(protocol.failure(str(exc))).decode())
        return 2
    sys.stdout.write(protocol.encode(reply).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
