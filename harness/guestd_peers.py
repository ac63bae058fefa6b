"""A test guest's guestd as its peers see it: guestd-ctl run as the agent runs it,
requests dropped into the spool as qemu-ga drops them, applications registered with
the client library, the outbox the host reads, and guestd's own log.

The guest is a :class:`harness.guest.Guest` (``guestd_ctl_argv`` set for :func:`ctl`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from guestd import group_protocol, protocol
from guestd.client import Application


def ctl(guest, phase="vote", event="reboot", timeout=2.0, silence="accept", socket=None,
        relay=True, details=None):
    """Run guestd-ctl as the agent does (``relay``: with --timeout) and parse its answer."""
    req = protocol.request(f"r{time.monotonic_ns()}", guest.instance, event, phase, timeout,
                           details or {"type": "SOFT"}, silence)
    argv = list(guest.guestd_ctl_argv)
    if socket is not None:
        argv += ["--socket", socket]
    if relay:
        argv += ["--timeout", str(timeout)]
    done = subprocess.run(argv, input=json.dumps(req).encode(), capture_output=True,
                          env={"GUESTD_SOCKET": guest.guestd_socket}, timeout=timeout + 5)
    return done.returncode, json.loads(done.stdout)


def app(guest, name, vote=None, notice=None, events=("*",), message=None, result=None):
    """An application registered with ``guest``'s guestd (stop it when done)."""
    application = Application(name, events, on_vote=vote, on_notice=notice,
                              socket_path=guest.guestd_socket, on_message=message,
                              on_result=result).start()
    assert application.registered.wait(5)
    return application


def log_count(guest, text):
    """How many times ``text`` appears in ``guest``'s guestd log."""
    with open(guest.guestd.log_path) as f:
        return f.read().count(text)


def spool(guest, req_or_bytes, rid=None):
    """Drop a request into guestd's spool as qemu-ga would (the file written, then closed)."""
    data = (req_or_bytes if isinstance(req_or_bytes, bytes)
            else protocol.encode(req_or_bytes))
    rid = rid or req_or_bytes["id"]
    with open(os.path.join(guest.spool_dir, rid + protocol.REQ_SUFFIX), "wb") as f:
        f.write(data)
    return os.path.join(guest.spool_dir, rid + protocol.ANS_SUFFIX)


def wait_answer(path, timeout=5.0):
    """The answer guestd writes to ``path`` (from :func:`spool`), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.005)
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n") and data.count(b"\n") == 1  # one frame
    return protocol.decode(data)


def group_request(guest, phase, details, rid=None, timeout=2.0):
    """A host request of server-group messaging (``phase``: message or receipt)."""
    return protocol.request(rid or f"g{time.monotonic_ns()}", guest.instance,
                            protocol.GROUP, phase, timeout, details)


def outbox(guest):
    """``guest``'s outbox file, parsed as the host parses it; None when there is none
    (guestd holds nothing to send)."""
    try:
        with open(guest.outbox_file, "rb") as f:
            return group_protocol.parse_outbox(f.read())
    except FileNotFoundError:
        return None
