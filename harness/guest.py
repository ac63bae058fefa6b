"""A "guest" on the host: qemu-ga on a unix socket plus guestd, as one VM would have.

The qemu-ga socket is ``<socket_dir>/<instance>.sock``, where the agent in
qga-socket mode finds it. qemu-ga's children (guestd-ctl) inherit
GUESTD_SOCKET, exactly as in a real guest.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

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
        self.qga_socket = os.path.join(socket_dir, f"{instance}.sock")
        os.makedirs(self.hooks_dir, exist_ok=True)
        os.makedirs(os.path.join(workdir, "qga-state"), exist_ok=True)
        env = {**os.environ, "GUESTD_SOCKET": self.guestd_socket, "PYTHONPATH": REPO}
        self.guestd = Process([GUEST_PYTHON, "-m", "guestd.daemon", "--socket",
                               self.guestd_socket, "--hooks-dir", self.hooks_dir],
                              os.path.join(workdir, "guestd.log"), env)
        self.qemu_ga = Supervised(
            [qemu_ga, "-m", "unix-listen", "-p", self.qga_socket,
             "-t", os.path.join(workdir, "qga-state"), "-f", os.path.join(workdir, "qga.pid")],
            os.path.join(workdir, "qemu-ga.log"), env)
        wait_for(lambda: _connectable(self.guestd_socket), 10, f"guestd of {instance}")
        wait_for(lambda: os.path.exists(self.qga_socket), 10, f"qemu-ga of {instance}")

    def add_hook(self, name: str, script: str) -> str:
        path = os.path.join(self.hooks_dir, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path

    def stop(self) -> None:
        self.qemu_ga.stop()
        self.guestd.stop()
        if os.path.exists(self.qga_socket):
            os.unlink(self.qga_socket)


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
    return True
