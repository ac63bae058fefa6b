"""libvirtd in session mode, run as an unprivileged user, with real TCG guests.

``qemu:///system`` does not work on these machines (no ``libvirt-qemu`` user);
``libvirtd`` run as an ordinary user with its own ``HOME`` and
``XDG_RUNTIME_DIR`` does, and root connects to it through its socket:
``qemu+unix:///session?socket=<workdir>/r/libvirt/libvirt-sock``.

The guest is the kernel + initramfs of ``deploy/guest-image/build.sh``; its
domain XML comes from ``deploy/guest-image/domain.xml.in``. Everything lives in
one short work directory under /tmp owned by that user (unix socket paths,
libvirt's channel sockets included, must stay under 108 bytes). QEMU outlives
libvirtd, so :meth:`LibvirtSession.stop` destroys every domain first, then
kills any QEMU left behind by the PID in its pid file, then libvirtd by its PID.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid as uuidlib
from xml.sax.saxutils import escape

from harness.processes import Process, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_DIR = os.path.join(REPO, "deploy", "guest-image")
BUILD_SCRIPT = os.path.join(IMAGE_DIR, "build.sh")
DOMAIN_TEMPLATE = os.path.join(IMAGE_DIR, "domain.xml.in")
DEFAULT_CACHE = os.path.join(REPO, ".cache", "guest-image")
AGENT_CHANNEL = "org.qemu.guest_agent.0"
CMDLINE = "console=ttyS0 quiet"


class Unavailable(RuntimeError):
    """libvirt/QEMU cannot run guests here (not installed, or libvirtd cannot start)."""


def build_image(out: str = DEFAULT_CACHE, extras: tuple = ()) -> tuple:
    """Build (or reuse) the guest image; ``(kernel, initrd)`` paths."""
    argv = [BUILD_SCRIPT]
    for extra in extras:
        argv += ["--extra", extra]
    result = subprocess.run([*argv, out], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({result.returncode}):\n"
                           f"{result.stderr[-3000:]}")
    kernel, initrd = result.stdout.split()[-2:]
    return kernel, initrd


def build_initrd(files: dict, out: str = DEFAULT_CACHE) -> str:
    """The guest image's initrd with ``files`` (guest path -> text) added, each
    executable (they are hooks and programs the tests run); built once per content."""
    extra = tempfile.mkdtemp(prefix="np-vm-extra-")
    try:
        for guest_path, text in files.items():
            path = os.path.join(extra, guest_path.lstrip("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        return build_image(out, extras=(extra,))[1]
    finally:
        shutil.rmtree(extra, ignore_errors=True)


def domain_xml(name: str, uuid: str, kernel: str, initrd: str, console_log: str,
               vcpus: int = 2, current_vcpus: int = 1, memory_mib: int = 256,
               cmdline: str = CMDLINE) -> str:
    """The domain of ``domain.xml.in`` with its placeholders filled in."""
    values = {"NAME": name, "UUID": str(uuidlib.UUID(uuid)), "KERNEL": kernel,
              "INITRD": initrd, "CMDLINE": cmdline, "CONSOLE_LOG": console_log,
              "VCPUS": str(vcpus), "CURRENT_VCPUS": str(current_vcpus),
              "MEMORY_MIB": str(memory_mib)}
    with open(DOMAIN_TEMPLATE) as f:
        xml = f.read()
    for key, value in values.items():
        xml = xml.replace(f"@{key}@", escape(value, {"'": "&apos;", '"': "&quot;"}))
    return xml


def check_available() -> None:
    """Raise :class:`Unavailable` unless libvirtd, QEMU and libvirt-python are here."""
    missing = [binary for binary in ("libvirtd", "qemu-system-x86_64", "setpriv")
               if not shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if missing:
        raise Unavailable(f"not installed: {', '.join(missing)} (deploy/bootstrap.sh installs "
                          "qemu-system-x86, libvirt-daemon and libvirt-daemon-driver-qemu)")
    try:
        import libvirt  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"libvirt-python: {exc}") from None


class LibvirtSession:
    """One session-mode libvirtd running as ``user``, and the guests it boots."""

    def __init__(self, kernel: str, initrd: str, user: str = "nobody",
                 start_timeout: float = 60.0) -> None:
        check_available()
        import libvirt

        self._libvirt = libvirt
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        entry = pwd.getpwnam(user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        # Short, and owned by the user: QEMU (as the user) reads the images and
        # writes console logs here; libvirt puts its sockets under it.
        self.workdir = tempfile.mkdtemp(prefix="np-lv-")
        os.chmod(self.workdir, 0o755)  # mkdtemp's 0700 would lock the user out
        self.logs = os.path.join(self.workdir, "logs")
        self.process: Process | None = None
        self.conn = None
        try:
            home = self._mkdir("h")
            runtime = self._mkdir("r", 0o700)
            config = self._mkdir("c")
            self._mkdir("logs")
            images = self._mkdir("images")
            self.kernel = self._copy(kernel, images)
            self.initrd = self._copy(initrd, images)
            self._mkdir("c/libvirt")
            # No virtlogd: QEMU writes its own log and console files.
            self._write("c/libvirt/qemu.conf", 'stdio_handler = "file"\n')
            self._write("c/libvirt/libvirtd.conf",
                        f'log_outputs = "3:file:{self.logs}/libvirtd-errors.log"\n')
            self.socket = os.path.join(runtime, "libvirt", "libvirt-sock")
            self.uri = f"qemu+unix:///session?socket={self.socket}"
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home,
                   "XDG_RUNTIME_DIR": runtime, "XDG_CONFIG_HOME": config,
                   "XDG_CACHE_HOME": self._mkdir("cache"), "LC_ALL": "C.UTF-8"}
            # setpriv execs libvirtd: the PID we hold is libvirtd's.
            self.process = Process(
                ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                 "--", "libvirtd"],
                os.path.join(self.logs, "libvirtd.log"), env=env, cwd=self.workdir)
            conn = wait_for(self._connect, start_timeout, "session libvirtd", interval=0.2)
            if conn == "exited":
                raise Unavailable(f"libvirtd exited ({self.process.popen.returncode}):\n"
                                  f"{self.process.log_tail()}")
            self.conn = conn
        except Exception as exc:
            log = self.process.log_tail() if self.process else ""
            self.stop()
            if isinstance(exc, TimeoutError):
                raise Unavailable(f"session libvirtd did not start: {exc}\n{log}") from None
            raise

    # --- set-up helpers ------------------------------------------------------------

    def _mkdir(self, relative: str, mode: int = 0o755) -> str:
        path = os.path.join(self.workdir, relative)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        os.chown(path, self.uid, self.gid)
        return path

    def _copy(self, source: str, directory: str) -> str:
        """``source`` into ``directory``, replaced whole (a new file, then a rename): a QEMU
        started from the previous copy may still be reading it (two guests booted from one
        initrd), and must not see it truncated and rewritten."""
        path = os.path.join(directory, os.path.basename(source))
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".copy-")
        os.close(fd)
        shutil.copyfile(source, partial)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
        return path

    def _write(self, relative: str, text: str) -> None:
        path = os.path.join(self.workdir, relative)
        with open(path, "w") as f:
            f.write(text)
        os.chown(path, self.uid, self.gid)

    def _connect(self):
        if not self.process.alive():
            return "exited"  # wait_for would take an exception for "not yet"
        if not os.path.exists(self.socket):
            return None
        return self._libvirt.open(self.uri)

    # --- guests --------------------------------------------------------------------

    def boot(self, uuid: str, name: str | None = None, vcpus: int = 2, current_vcpus: int = 1,
             memory_mib: int = 256, cmdline: str = CMDLINE, initrd: str | None = None):
        """Define and start a guest with this UUID (a Nova instance's); its domain."""
        name = name or f"g-{uuid[:8]}"
        if initrd is not None:
            initrd = self._copy(initrd, os.path.join(self.workdir, "images"))
        xml = domain_xml(name, uuid, self.kernel, initrd or self.initrd, self.console_log(name),
                         vcpus=vcpus, current_vcpus=current_vcpus, memory_mib=memory_mib,
                         cmdline=cmdline)
        domain = self.conn.defineXML(xml)
        domain.create()
        return domain

    def console_log(self, name: str) -> str:
        return os.path.join(self.logs, f"{name}.console.log")

    def console(self, name: str, tail: int = 4000) -> str:
        """The end of a guest's serial console (kernel messages, /init's lines)."""
        try:
            with open(self.console_log(name), "rb") as f:
                return f.read()[-tail:].decode(errors="replace")
        except OSError:
            return ""

    def agent_connected(self, domain) -> bool:
        """libvirt's view: qemu-ga has the guest end of the agent channel open."""
        from xml.etree import ElementTree

        root = ElementTree.fromstring(domain.XMLDesc(0))
        return any(target.get("name") == AGENT_CHANNEL and target.get("state") == "connected"
                   for target in root.iterfind("./devices/channel/target"))

    def qemu_pid(self, domain) -> int:
        """The PID of the guest's QEMU process (libvirt's pid file), to signal it:
        a SIGSTOPped QEMU is a hung guest that libvirt still reports running."""
        path = os.path.join(self.workdir, "r", "libvirt", "qemu", "run", f"{domain.name()}.pid")
        with open(path) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"qemu-system" not in f.read():
                raise RuntimeError(f"{path}: PID {pid} is not a QEMU process")
        return pid

    def destroy(self, domain) -> None:
        """Power the guest off at once and forget it (undefine)."""
        libvirt = self._libvirt
        try:
            if domain.isActive():
                domain.destroy()
        except libvirt.libvirtError:
            pass  # already gone
        try:
            domain.undefine()
        except libvirt.libvirtError:
            pass

    def stop(self) -> None:
        """Destroy every domain, then stop libvirtd; never raises."""
        if self.conn is not None:
            try:
                for domain in self.conn.listAllDomains(0):
                    self.destroy(domain)
            except self._libvirt.libvirtError:
                pass
            try:
                self.conn.close()
            except self._libvirt.libvirtError:
                pass
            self.conn = None
        self._kill_leftover_qemu()
        if self.process is not None:
            self.process.stop(timeout=10)
        if not os.environ.get("NOVAPROXY_KEEP_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"\nlibvirt session logs kept in {self.workdir}")

    def _kill_leftover_qemu(self) -> None:
        """QEMU processes libvirt did not destroy (libvirtd hung, died): by pid file."""
        for pidfile in glob.glob(os.path.join(self.workdir, "r", "libvirt", "qemu", "run",
                                              "*.pid")):
            try:
                with open(pidfile) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"qemu-system" not in f.read():
                        continue  # the pid was reused
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue
