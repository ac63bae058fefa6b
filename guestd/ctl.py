"""guestd-ctl: the one command the host runs in the guest (through qemu-ga guest-exec).

    guestd-ctl [--socket PATH] [--timeout SECONDS] < request.json > answer.json

Reads one request as JSON on stdin, hands it to guestd and prints guestd's
answer as JSON on stdout (exit 0; guestd's answer may itself be an error
message). With no guestd socket, the answer is "not-negotiating": a guest that
does not take part (guestd not started, or stopped, which removes its socket) is
not a guest that timed out. A socket nobody listens on is a guestd that crashed:
its applications cannot be asked, which is an error (the host's ``unreachable``),
never consent. Exit 2 on errors: an unreadable request, a crashed guestd, or one
that fails to answer in time.

Kept lean on purpose, because its start-up time is paid by every negotiation:
when the host passes ``--timeout`` the request is relayed as raw bytes (guestd
validates it) and ``json`` is never imported; ``_socket`` spares the enum and
selectors imports of ``socket``.
"""

from __future__ import annotations

import _socket
import os
import sys

from guestd import protocol

# Beyond the request's own timeout, how long to wait for guestd's answer.
GRACE = 1.0


class CtlError(Exception):
    pass


def _options(argv: list) -> tuple:
    socket_path = os.environ.get("GUESTD_SOCKET", protocol.DEFAULT_SOCKET)
    timeout = None
    args = list(argv)
    while args:
        option = args.pop(0)
        if option in ("--socket", "--timeout") and args:
            value = args.pop(0)
        else:
            raise CtlError(f"usage: guestd-ctl [--socket PATH] [--timeout SECONDS]; "
                           f"unexpected {option!r}")
        if option == "--socket":
            socket_path = value
        else:
            try:
                timeout = float(value)
            except ValueError:
                raise CtlError(f"--timeout {value!r}: not a number of seconds") from None
    return socket_path, timeout


def relay(path: str, frame: bytes, timeout: float) -> bytes | None:
    """Send one frame to guestd at ``path``; its answer frame, or None without guestd."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout + GRACE)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            return None
        except ConnectionRefusedError:
            raise CtlError(f"guestd is not running but left its socket {path}: it "
                           "crashed, so its applications cannot be asked") from None
        sock.sendall(frame + b"\n")
        decoder = protocol.FrameDecoder(raw=True)
        while True:
            data = sock.recv(65536)
            if not data:
                raise CtlError("guestd closed the connection without answering")
            for item in decoder.feed(data):
                if isinstance(item, protocol.ProtocolError):
                    raise CtlError(f"guestd: {item}")
                return item
    except _socket.timeout:
        raise CtlError(f"guestd did not answer within {timeout + GRACE:.1f}s") from None
    finally:
        sock.close()


def main(argv: list | None = None) -> int:
    try:
        socket_path, timeout = _options(sys.argv[1:] if argv is None else argv)
        data = sys.stdin.buffer.read(protocol.MAX_FRAME + 1).strip()
        if len(data) > protocol.MAX_FRAME or b"\n" in data:
            raise CtlError(f"the request must be one JSON document under "
                           f"{protocol.MAX_FRAME} bytes")
        req = None
        if timeout is None:
            req = protocol.parse_request(protocol.decode(data))
            timeout = req["timeout"]
        answer = relay(socket_path, data, timeout)
        if answer is None:
            req = req or protocol.parse_request(protocol.decode(data))
            answer = protocol.encode(protocol.answer(req, protocol.NOT_NEGOTIATING))[:-1]
    except (CtlError, protocol.ProtocolError, OSError) as exc:
        sys.stdout.write(protocol.encode(protocol.failure(str(exc))).decode())
        return 2
    sys.stdout.buffer.write(answer + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
