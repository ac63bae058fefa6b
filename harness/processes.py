"""Start and stop child processes, with logs to files and bounded waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    """Poll ``check`` until it returns a truthy value; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing is not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:g}s"
                       + (f" (last error: {last_error})" if last_error else ""))


class Process:
    """One child process; its output goes to ``log_path``."""

    def __init__(self, argv: list, log_path: str, env: dict | None = None,
                 cwd: str | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            try:
                os.kill(self.popen.pid, signum)
            except ProcessLookupError:
                pass  # it exited meanwhile

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")


class Supervised:
    """A process restarted whenever it exits, until stopped (qemu-ga needs it:
    on a host unix socket it exits when a client leaves replies unread)."""

    def __init__(self, argv: list, log_path: str, env: dict | None = None,
                 cwd: str | None = None) -> None:
        self.argv, self.log_path, self.env, self.cwd = argv, log_path, env, cwd
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.process = Process(argv, log_path, env, cwd)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            self.process.popen.wait()
            if self._stopping.wait(0.05):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self.process = Process(self.argv, self.log_path, self.env, self.cwd)

    def signal(self, signum: int) -> None:
        with self._lock:
            self.process.signal(signum)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self.process.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.process.stop()
        self._thread.join(5)
