"""A "guest" on the host: qemu-ga on a unix socket plus guestd, as one VM would have.

The qemu-ga socket is ``<socket_dir>/<instance>.sock``, where the agent in
qga-socket mode finds it. qemu-ga's children (guestd-ctl) inherit
GUESTD_SOCKET, exactly as in a real guest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading

from harness.processes import Process, Supervised, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# guestd is standard library only: run it, as a guest would, on the system's
# python3 (Debian's, in a Debian guest) when there is one.
GUEST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def write_guestd_ctl(path: str) -> list:
    """A lean guestd-ctl launcher (``python3 -IS``); the command line to run it."""
    with open(path, "w") as f:
        # One word of options: the kernel passes a shebang's options as one argument.
        f.write(f"#!{GUEST_PYTHON} -IS\n"
                f"import sys\nsys.path.insert(0, {REPO!r})\n"
                "from guestd.ctl import main\nsys.exit(main())\n")
    os.chmod(path, 0o755)
    return [path]


class Guest:
    def __init__(self, instance: str, socket_dir: str, workdir: str) -> None:
        qemu_ga = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
        if not os.path.exists(qemu_ga):
            raise RuntimeError("qemu-ga not found: install the Debian package qemu-guest-agent")
        self.instance = instance
        self.workdir = workdir
        self.hooks_dir = os.path.join(workdir, "hooks.d")
        self.guestd_socket = os.path.join(workdir, "guestd.sock")
        self.qga_socket = ""
        os.makedirs(self.hooks_dir, exist_ok=True)
        os.makedirs(os.path.join(workdir, "qga-state"), exist_ok=True)
        env = {**os.environ, "GUESTD_SOCKET": self.guestd_socket, "PYTHONPATH": REPO}
        self.guestd = Process([GUEST_PYTHON, "-m", "guestd.daemon", "--socket",
                               self.guestd_socket, "--hooks-dir", self.hooks_dir],
                              os.path.join(workdir, "guestd.log"), env)
        self._qemu_ga_binary, self._env = qemu_ga, env
        self.state = "off"
        self.qemu_ga = None
        self._lock = threading.Lock()  # the test and the harness's follower both drive it
        self._stopped = False
        self.power_on(socket_dir)
        wait_for(lambda: _connectable(self.guestd_socket), 10, f"guestd of {instance}")

    # The VM's life as Nova drives it, played on the host processes: powered
    # off = no guest agent; paused or suspended = a frozen guest agent; moved
    # to another host = its socket in that host's directory.

    def power_on(self, socket_dir: str) -> None:
        with self._lock:
            if not self._stopped:
                self._power_on(socket_dir)

    def _power_on(self, socket_dir: str) -> None:
        qga_socket = os.path.join(socket_dir, f"{self.instance}.sock")
        if self.qemu_ga is not None and qga_socket == self.qga_socket:
            self.qemu_ga.signal(signal.SIGCONT)
        else:
            self._power_off()
            self.qga_socket = qga_socket
            self.qemu_ga = Supervised(
                [self._qemu_ga_binary, "-m", "unix-listen", "-p", qga_socket,
                 "-t", os.path.join(self.workdir, "qga-state"),
                 "-f", os.path.join(self.workdir, "qga.pid")],
                os.path.join(self.workdir, "qemu-ga.log"), self._env)
            wait_for(lambda: os.path.exists(qga_socket), 10, f"qemu-ga of {self.instance}")
        self.state = "running"

    def power_off(self) -> None:
        with self._lock:
            self._power_off()

    def _power_off(self) -> None:
        if self.qemu_ga is not None:
            self.qemu_ga.stop()
            self.qemu_ga = None
            if os.path.exists(self.qga_socket):
                os.unlink(self.qga_socket)
        self.state = "off"

    def freeze(self) -> None:
        with self._lock:
            if self.qemu_ga is not None:
                self.qemu_ga.signal(signal.SIGSTOP)
                self.state = "frozen"

    def add_hook(self, name: str, script: str) -> str:
        path = os.path.join(self.hooks_dir, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path

    def stop(self) -> None:
        with self._lock:
            self._stopped = True  # no power_on() from the harness's follower after this
            self._power_off()
        self.guestd.stop()


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
    return True
