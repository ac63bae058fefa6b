"""Hook scripts: applications that are scripts take part without a client.

Every executable file in the hooks directory is run as ``HOOK EVENT PHASE``
with the notice as JSON on stdin. For a vote, exit 0 accepts, exit 1 rejects
with the first line of stdout as the reason, and anything else (another status,
a crash, a missed deadline) is an error, counted as the host's policy says.
For other phases the exit status is only logged.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess

from guestd import protocol

LOG = logging.getLogger(__name__)
MAX_OUTPUT = 4096


def discover(hooks_dir: str | None) -> list:
    """Executable regular files in ``hooks_dir``, in name order (like run-parts)."""
    if not hooks_dir or not os.path.isdir(hooks_dir):
        return []
    hooks = []
    for name in sorted(os.listdir(hooks_dir)):
        path = os.path.join(hooks_dir, name)
        if not name.startswith(".") and os.path.isfile(path) and os.access(path, os.X_OK):
            hooks.append(path)
    return hooks


def _ballot(returncode: int, stdout: bytes) -> tuple:
    if returncode == 0:
        return protocol.ACCEPT, ""
    first_line = stdout.decode(errors="replace").strip().splitlines()[:1]
    if returncode == 1:
        return protocol.REJECT, first_line[0] if first_line else ""
    return protocol.ERROR, f"exit status {returncode}"


def run(path: str, req: dict, timeout: float) -> dict:
    """Run one hook for ``req`` within ``timeout``; its :func:`protocol.voter` entry."""
    name = os.path.basename(path)
    payload = json.dumps(protocol.notice(req)).encode()
    try:
        # A session of its own, so that a missed deadline kills whatever it started.
        proc = subprocess.Popen([path, req["event"], req["phase"]], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    except OSError as exc:
        LOG.warning("hook %s could not start: %s", name, exc)
        return protocol.voter(name, protocol.ERROR, str(exc))
    try:
        stdout, _ = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        LOG.warning("hook %s missed its %.1fs deadline for %s %s", name, timeout,
                    req["event"], req["phase"])
        return protocol.voter(name, protocol.TIMEOUT)
    vote, reason = _ballot(proc.returncode, stdout[:MAX_OUTPUT])
    LOG.info("hook %s: %s %s -> %s %s", name, req["event"], req["phase"], vote, reason)
    return protocol.voter(name, vote, reason)
