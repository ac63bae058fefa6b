"""A "guest" on the host: qemu-ga on a unix socket plus guestd, as one VM would have.

The qemu-ga socket is ``<socket_dir>/<instance>.sock``, where the agent in
qga-socket mode finds it. qemu-ga's children (guestd-ctl) inherit
GUESTD_SOCKET, exactly as in a real guest. qemu-ga runs in the guest's work
directory, so that the host reads guestd's status file through it as the
relative path :data:`STATUS_FILE` (qemu-ga resolves paths against its cwd), and
puts requests into guestd's spool as :data:`SPOOL_DIR`.

qemu-ga runs here as the test's user (root in CI) on the host itself, so it
reads the project's own block list (deploy/image/make-qga-config.py) plus
:data:`HOST_UNSAFE`: the commands a real guest allows for libvirt and Nova,
which on a host process would shut down, freeze or re-clock the machine.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import signal
import socket
import sys
import threading
import time

from harness.processes import Process, Supervised, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# guestd is standard library only: run it, as a guest would, on the system's
# python3 (Debian's, in a Debian guest) when there is one.
GUEST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# guestd's status file, relative to the guest's work directory (qemu-ga's cwd).
STATUS_FILE = "guestd-status.json"
# guestd's spool, relative to the guest's work directory too.
SPOOL_DIR = "guestd-spool"
# guestd's outbox of group messages, relative to the guest's work directory too.
OUTBOX_FILE = "guestd-outbox.json"
STATUS_INTERVAL = 0.2
HEALTH_INTERVAL = 0.5
# Allowed in a real guest (see make-qga-config.py ALLOWED), blocked on host processes:
# each acts on the machine qemu-ga runs on, here the test machine itself.
HOST_UNSAFE = frozenset({
    "guest-shutdown", "guest-set-vcpus", "guest-set-time", "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw"})


def qemu_ga_binary() -> str:
    """This machine's qemu-ga."""
    qemu_ga = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
    if not os.path.exists(qemu_ga):
        raise RuntimeError("qemu-ga not found: install the Debian package qemu-guest-agent")
    return qemu_ga


@functools.cache
def host_block_list(qemu_ga: str) -> tuple[str, ...]:
    """What a host-process qemu-ga blocks: every command of this qemu-ga that a
    novaproxy guest image blocks, and :data:`HOST_UNSAFE`."""
    path = os.path.join(REPO, "deploy", "image", "make-qga-config.py")
    spec = importlib.util.spec_from_file_location("make_qga_config", path)
    qga_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qga_config)
    _, commands = qga_config.guest_commands(qemu_ga)
    return tuple(sorted((set(commands) - set(qga_config.allowed())) | HOST_UNSAFE))


def write_qga_config(path: str, qemu_ga: str) -> str:
    """A qemu-ga configuration file (read through QGA_CONF) with the host block list."""
    with open(path, "w") as f:
        f.write("# harness/guest.py: the guest image's block list, and what would act on"
                " this host\n[general]\nblock-rpcs=" + ",".join(host_block_list(qemu_ga))
                + "\n")
    return path


class GuestNotRunning(RuntimeError):
    """The guest is not in a state the requested fault can be played in."""


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
        qemu_ga = qemu_ga_binary()
        self.instance = instance
        self.workdir = workdir
        self.hooks_dir = os.path.join(workdir, "hooks.d")
        self.health_dir = os.path.join(workdir, "health.d")
        self.guestd_socket = os.path.join(workdir, "guestd.sock")
        self.status_file = os.path.join(workdir, STATUS_FILE)
        self.spool_dir = os.path.join(workdir, SPOOL_DIR)
        self.outbox_file = os.path.join(workdir, OUTBOX_FILE)
        self.group_hooks_dir = os.path.join(workdir, "group.d")
        self.qga_socket = ""
        os.makedirs(self.hooks_dir, exist_ok=True)
        os.makedirs(self.health_dir, exist_ok=True)
        os.makedirs(self.group_hooks_dir, exist_ok=True)
        os.makedirs(os.path.join(workdir, "qga-state"), exist_ok=True)
        env = {**os.environ, "GUESTD_SOCKET": self.guestd_socket, "PYTHONPATH": REPO}
        self.qga_config = write_qga_config(os.path.join(workdir, "qemu-ga.conf"), qemu_ga)
        self._guestd_argv = [
            GUEST_PYTHON, "-m", "guestd.daemon", "--socket", self.guestd_socket,
            "--hooks-dir", self.hooks_dir, "--status-file", self.status_file,
            "--status-interval", str(STATUS_INTERVAL), "--health-dir", self.health_dir,
            "--health-interval", str(HEALTH_INTERVAL), "--spool-dir", self.spool_dir,
            "--outbox", self.outbox_file, "--group-hooks-dir", self.group_hooks_dir]
        self._qemu_ga_binary, self._env = qemu_ga, env
        self.guestd = self._start_guestd()
        self.state = "off"
        self.qemu_ga = None
        self._lock = threading.Lock()  # the test and the harness's follower both drive it
        self._stopped = False
        self.power_on(socket_dir)
        self._wait_for_guestd()

    def _start_guestd(self) -> Process:
        return Process(self._guestd_argv, os.path.join(self.workdir, "guestd.log"), self._env)

    def _wait_for_guestd(self) -> None:
        wait_for(lambda: _connectable(self.guestd_socket), 10, f"guestd of {self.instance}")

    def restart_guestd(self) -> None:
        """guestd stops and starts again, as ``systemctl restart guestd`` does."""
        self.guestd.stop()
        self.guestd = self._start_guestd()
        self._wait_for_guestd()

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
                os.path.join(self.workdir, "qemu-ga.log"),
                # qemu-ga 7.2 has no -c: QGA_CONF names its configuration file.
                {**self._env, "QGA_CONF": self.qga_config}, cwd=self.workdir)
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

    def hang(self, timeout: float = 5.0) -> None:
        """The guest hangs (its qemu-ga stops answering) while Nova still thinks it runs;
        unlike :meth:`freeze`, the harness's follower does not undo it.

        Raises :class:`GuestNotRunning` for a guest that is off or frozen, or whose
        qemu-ga is not running: hanging it would do nothing, and the qemu-ga started
        when it comes back would answer as if the hang had never been asked for.
        """
        with self._lock:
            if self.state != "running" or self.qemu_ga is None:
                raise GuestNotRunning(f"cannot hang guest {self.instance}: it is {self.state}"
                                      " (wait until the harness has powered it on)")
            # qemu-ga may be between exiting and its restart (see Supervised): stop
            # whichever process is current, until one is seen stopped.
            deadline = time.monotonic() + timeout
            while True:
                self.qemu_ga.signal(signal.SIGSTOP)
                if _stopped(self.qemu_ga.process.pid):
                    return
                if time.monotonic() > deadline:
                    raise GuestNotRunning(f"cannot hang guest {self.instance}: its qemu-ga "
                                          f"is not running ({self.qemu_ga.restarts} restarts;"
                                          f" see {self.qemu_ga.log_path})")
                time.sleep(0.02)

    def unhang(self) -> None:
        """What a reboot does to a hung guest: it answers again."""
        with self._lock:
            if self.qemu_ga is not None:
                self.qemu_ga.signal(signal.SIGCONT)

    def qemu_ga_listening(self) -> bool:
        """qemu-ga accepts connections on its socket (one just restarted may not yet)."""
        try:
            return _connectable(self.qga_socket)
        except OSError:
            return False

    def add_hook(self, name: str, script: str) -> str:
        """A vote/notice hook script; its path."""
        return _write_script(self.hooks_dir, name, script)

    def add_health_hook(self, name: str, script: str) -> str:
        """A health hook script (in the status file as ``hook:<name>``); its path."""
        return _write_script(self.health_dir, name, script)

    def add_group_hook(self, name: str, script: str) -> str:
        """A group hook script, run with each group message on stdin; its path."""
        return _write_script(self.group_hooks_dir, name, script)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True  # no power_on() from the harness's follower after this
            self._power_off()
        self.guestd.stop()


def _write_script(directory: str, name: str, script: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, 0o755)
    return path


def _stopped(pid: int) -> bool:
    """The process exists and is stopped (state T in /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # "pid (comm) state ...": comm may hold spaces and parentheses.
            return f.read().rpartition(")")[2].split()[0] == "T"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
    return True
