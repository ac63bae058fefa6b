"""Hook scripts: applications that are scripts take part without a client.

Vote hooks (``hooks.d``): every executable file is run as ``HOOK EVENT PHASE``
with the notice as JSON on stdin. For a vote, exit 0 accepts, exit 1 rejects
with the first line of stdout as the reason, and anything else (another status,
a crash, a missed deadline) is an error, counted as the host's policy says.
For other phases the exit status is only logged. To a ``prepare`` (a ``scale-down``'s)
a hook may offer vCPUs to take offline: when it exits 0 and the last non-empty line of
its stdout is a JSON object with an ``offline`` list (``{"offline": [3, 2]}``), that list
is its voter's ``offline`` (:func:`protocol.parse_offline`); a malformed one is ignored,
and its reason says why.

Group hooks (``group.d``): every executable file is run as ``HOOK group message``
with a group message (:func:`guestd.group_protocol.group_message`) as JSON on stdin;
the exit status is only logged.

Health hooks (``health.d``): every executable file is run with no arguments
and nothing on stdin. Exit 0 is healthy; another status, or a missed deadline,
unhealthy. The last non-empty line of stdout is the reason, unless it is a JSON
object, whose ``reason`` and ``action`` (``log``, ``reboot`` or ``stop``) are
used instead.

Either kind is killed with everything it started (its process group) at its
deadline, and only the first and last :data:`MAX_OUTPUT` bytes of its output
are kept, so a hook can neither hold guestd up nor fill its memory.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import time

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


def _execute(argv: list, stdin: bytes | None, timeout: float) -> tuple:
    """Run ``argv`` with ``stdin`` within ``timeout``: (exit status, output).

    The exit status is None when the deadline came first (the process still
    running, or something it started still holding its stdout); the whole
    process group is then killed. Raises OSError when it cannot start.
    """
    # A session of its own, so that a missed deadline kills whatever it started.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    output = bytearray()
    pending = memoryview(stdin or b"")
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if proc.stdin is not None:
                os.set_blocking(proc.stdin.fileno(), False)
                selector.register(proc.stdin, selectors.EVENT_WRITE)
            while len(selector.get_map()) and time.monotonic() < deadline:
                for key, _ in selector.select(deadline - time.monotonic()):
                    if key.fileobj is proc.stdin:
                        try:
                            pending = pending[os.write(key.fd, pending):]
                        except BrokenPipeError:  # the hook does not read its stdin
                            pending = pending[:0]
                        if not pending:
                            selector.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(proc.stdout)
                    output += chunk
                    if len(output) > 2 * MAX_OUTPUT:
                        del output[MAX_OUTPUT:-MAX_OUTPUT]
            if len(selector.get_map()):
                raise subprocess.TimeoutExpired(argv, timeout)
        return proc.wait(max(deadline - time.monotonic(), 0)), bytes(output)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return None, bytes(output)
    finally:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _ballot(returncode: int, stdout: bytes) -> tuple:
    if returncode == 0:
        return protocol.ACCEPT, ""
    first_line = stdout.decode(errors="replace").strip().splitlines()[:1]
    if returncode == 1:
        return protocol.REJECT, first_line[0] if first_line else ""
    return protocol.ERROR, f"exit status {returncode}"


def _last_line(stdout: bytes) -> str:
    lines = [line.strip() for line in stdout.decode(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


def _json_object(line: str) -> dict | None:
    """``line`` as a JSON object, or None when it is not one."""
    try:
        value = json.loads(line) if line.startswith("{") else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def offered(stdout: bytes) -> tuple:
    """The vCPUs a prepare hook offers to take offline: the ``offline`` list of the last
    non-empty line of its ``stdout`` when that is a JSON object with one, else none.
    Raises :class:`protocol.ProtocolError` for a malformed list."""
    report = _json_object(_last_line(stdout))
    if report is None or "offline" not in report:
        return ()
    return protocol.parse_offline(report["offline"])


def run(path: str, req: dict, timeout: float) -> dict:
    """Run one vote hook for ``req`` within ``timeout``; its :func:`protocol.voter` entry."""
    name = os.path.basename(path)
    payload = json.dumps(protocol.notice(req)).encode()
    try:
        returncode, stdout = _execute([path, req["event"], req["phase"]], payload, timeout)
    except OSError as exc:
        LOG.warning("hook %s could not start: %s", name, exc)
        return protocol.voter(name, protocol.ERROR, str(exc))
    if returncode is None:
        LOG.warning("hook %s missed its %.1fs deadline for %s %s", name, timeout,
                    req["event"], req["phase"])
        return protocol.voter(name, protocol.TIMEOUT)
    vote, reason = _ballot(returncode, stdout[:MAX_OUTPUT])
    offline: tuple = ()
    if req["phase"] == protocol.PREPARE and returncode == 0:
        try:
            offline = offered(stdout[-MAX_OUTPUT:])
        except protocol.ProtocolError as exc:
            LOG.warning("hook %s: offline ignored: %s", name, exc)
            reason = f"offline ignored: {exc}"
    LOG.info("hook %s: %s %s -> %s %s%s", name, req["event"], req["phase"], vote, reason,
             f" offline {offline}" if offline else "")
    return protocol.voter(name, vote, reason, offline)


def run_group(path: str, message: dict, timeout: float, phase: str = protocol.MESSAGE) -> dict:
    """Run one group hook as ``HOOK group <phase>`` with ``message`` (a group message or
    a peer notice) on stdin within ``timeout``; its :func:`protocol.voter` entry: accept
    on exit 0, else an error or a timeout."""
    name = os.path.basename(path)
    what = message.get("id") or f"peer {message.get('peer')} seq {message.get('seq')}"
    try:
        returncode, _ = _execute([path, protocol.GROUP, phase],
                                 json.dumps(message).encode(), timeout)
    except OSError as exc:
        LOG.warning("group hook %s could not start: %s", name, exc)
        return protocol.voter(name, protocol.ERROR, str(exc))
    if returncode is None:
        LOG.warning("group hook %s missed its %.1fs deadline for %s", name, timeout, what)
        return protocol.voter(name, protocol.TIMEOUT)
    if returncode:
        LOG.warning("group hook %s: exit status %d for %s", name, returncode, what)
        return protocol.voter(name, protocol.ERROR, f"exit status {returncode}")
    return protocol.voter(name, protocol.ACCEPT)


def verdict(returncode: int | None, stdout: bytes, timeout: float) -> tuple:
    """(healthy, reason, action) of a health hook that ended with ``returncode``
    (None: killed at its ``timeout``) after printing ``stdout``."""
    healthy = returncode == 0
    if returncode is None:
        return False, f"timed out after {timeout:g}s", protocol.LOG_ONLY
    last = _last_line(stdout)
    default = "" if healthy else (f"killed by signal {-returncode}" if returncode < 0
                                  else f"exit status {returncode}")
    report = _json_object(last)
    if report is None:
        return healthy, last or default, protocol.LOG_ONLY
    try:
        _, reason, action = protocol.parse_health({**report, "healthy": healthy})
    except protocol.ProtocolError as exc:
        # Still a verdict (the exit status), but no action on the host's side.
        reason = report.get("reason")
        reason = reason if isinstance(reason, str) and reason else default
        return healthy, f"{reason} (ignored: {exc})".lstrip(), protocol.LOG_ONLY
    return healthy, reason or default, action


def check(path: str, timeout: float) -> tuple:
    """Run one health hook within ``timeout``: (healthy, reason, action)."""
    try:
        returncode, stdout = _execute([path], None, timeout)
    except OSError as exc:
        return False, f"could not start: {exc}", protocol.LOG_ONLY
    return verdict(returncode, stdout[-MAX_OUTPUT:], timeout)
