"""What goes into real guest images (deploy/image), on real processes.

The shipped qemu-ga configuration on this host's qemu-ga (7.2), its generator,
the diskimage-builder element's scripts run against a temporary root, and the
cloud-init snippet.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zipfile

import pytest

from harness.processes import Supervised, wait_for
from novaproxy.agent.guest_agent import CommandFailed, guest_exec
from novaproxy.agent.qga_socket import SocketGuestAgent

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
IMAGE = os.path.join(REPO, "deploy", "image")
CONF = os.path.join(IMAGE, "qemu-ga.conf")
ELEMENT = os.path.join(IMAGE, "elements", "novaproxy-guestd")
QEMU_GA = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
LIB = "/usr/lib/novaproxy-guestd"

pytestmark = pytest.mark.skipif(not os.path.exists(QEMU_GA),
                                reason="qemu-ga not installed (Debian package qemu-guest-agent)")


def _load(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(IMAGE, filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


qga_config = _load("make_qga_config", "make-qga-config.py")
ALLOWED = set(qga_config.ALLOWED)


def blocked_in(path: str) -> list[str]:
    with open(path) as f:
        (line,) = [li for li in f.read().splitlines() if li.startswith("block-rpcs=")]
    return line.split("=", 1)[1].split(",")


def dumped_block_list(argv: list[str], conf: str) -> set[str]:
    """The block list qemu-ga would use (``-D`` dumps its effective configuration)."""
    dumped = subprocess.run([QEMU_GA, *argv, "-D"], env={**os.environ, "QGA_CONF": conf},
                            capture_output=True, text=True, check=True).stdout
    (line,) = [li for li in dumped.splitlines() if li.startswith("block-rpcs=")]
    return set(line.split("=", 1)[1].split(","))


def all_commands() -> list[str]:
    return qga_config.guest_commands(QEMU_GA)[1]


# --- (a) qemu-ga 7.2 with the shipped configuration -----------------------------------------


@pytest.fixture(scope="module")
def agent():
    """qemu-ga on a unix socket reading the shipped file (7.2 has no -c: QGA_CONF)."""
    work = tempfile.mkdtemp(prefix="np-qga-")
    sock = os.path.join(work, "qga.sock")
    qemu_ga = Supervised(
        [QEMU_GA, "-m", "unix-listen", "-p", sock, "-t", work, "-f", f"{work}/qga.pid"],
        os.path.join(work, "qemu-ga.log"), {**os.environ, "QGA_CONF": CONF}, cwd=work)
    wait_for(lambda: os.path.exists(sock), 10, "qemu-ga socket")
    client = SocketGuestAgent(sock)
    client.work = work
    yield client
    client.close()
    qemu_ga.stop()
    shutil.rmtree(work, ignore_errors=True)


def test_the_effective_configuration_is_the_shipped_block_list():
    assert dumped_block_list([], CONF) == set(blocked_in(CONF))


def test_exactly_the_allowed_commands_are_enabled(agent):
    info = agent.execute("guest-info", timeout=5)
    enabled = {c["name"] for c in info["supported_commands"] if c["enabled"]}
    disabled = {c["name"] for c in info["supported_commands"] if not c["enabled"]}
    assert enabled == ALLOWED
    assert disabled == set(blocked_in(CONF))
    assert "guest-set-user-password" in disabled  # Nova set-password: off by default


def test_the_harmless_allowed_commands_work(agent, short_dir):
    # guest-shutdown, guest-set-time, guest-fsfreeze-* and guest-set-vcpus act on this
    # host: only their "enabled" flag is checked (above), they are never called.
    assert agent.execute("guest-ping", timeout=5) == {}
    assert agent.execute("guest-sync", {"id": 12345}, timeout=5) == 12345
    vcpus = agent.execute("guest-get-vcpus", timeout=5)
    assert vcpus and all("logical-id" in v for v in vcpus)

    path = os.path.join(short_dir, "status.json")
    with open(path, "w") as f:
        f.write('{"seq": 7}')
    handle = agent.execute("guest-file-open", {"path": path, "mode": "r"}, timeout=5)
    read = agent.execute("guest-file-read", {"handle": handle, "count": 4096}, timeout=5)
    assert base64.b64decode(read["buf-b64"]) == b'{"seq": 7}'
    assert agent.execute("guest-file-close", {"handle": handle}, timeout=5) == {}

    # guest-file-write, as the agent puts a request into guestd's spool.
    request = os.path.join(short_dir, "r.req")
    handle = agent.execute("guest-file-open", {"path": request, "mode": "w"}, timeout=5)
    agent.execute("guest-file-write", {"handle": handle, "buf-b64": "e30K"}, timeout=5)
    assert agent.execute("guest-file-close", {"handle": handle}, timeout=5) == {}
    with open(request, "rb") as f:
        assert f.read() == b"{}\n"

    # guest-exec and guest-exec-status, as the agent runs guestd-ctl.
    assert guest_exec(agent, ["/bin/true"], b"", 5) == (0, b"")
    assert guest_exec(agent, ["/bin/cat"], b"answer", 5) == (0, b"answer")


@pytest.mark.parametrize("command, arguments", [
    # Harmless even if the configuration were wrong: no such user, no such handle.
    ("guest-set-user-password",
     {"username": "np-no-such-user", "password": "eA==", "crypted": False}),
    ("guest-file-flush", {"handle": 0}),
    ("guest-file-seek", {"handle": 0, "offset": 0, "whence": "set"}),
    ("guest-network-get-interfaces", None),
    ("guest-get-osinfo", None),
    ("guest-get-users", None),
    ("guest-get-host-name", None),
    ("guest-get-time", None),
    ("guest-fsfreeze-status", None),
    ("guest-ssh-get-authorized-keys", {"username": "np-no-such-user"}),
])
def test_blocked_commands_are_refused(agent, command, arguments):
    with pytest.raises(CommandFailed) as failed:
        agent.execute(command, arguments, timeout=5)
    # What qemu-ga 7.2 answers for a disabled command (an unknown one says "not been found").
    assert failed.value.error_class == "CommandNotFound"
    assert failed.value.desc == f"Command {command} has been disabled"


# --- (b) the generator -----------------------------------------------------------------------


def test_the_generator_reproduces_the_shipped_file():
    done = subprocess.run(["/usr/bin/python3", os.path.join(IMAGE, "make-qga-config.py"),
                           "--qemu-ga", QEMU_GA], capture_output=True, text=True, check=True)
    with open(CONF) as f:
        assert done.stdout == f.read()
    assert done.stderr == ""  # qemu-ga 7.2 has every allowed command: no warning


def test_the_generator_blocks_everything_not_allowed_and_can_allow_set_password(tmp_path):
    commands = all_commands()
    assert ALLOWED <= set(commands)
    assert sorted(blocked_in(CONF)) == sorted(set(commands) - ALLOWED)
    out = tmp_path / "qga.conf"
    subprocess.run(["/usr/bin/python3", os.path.join(IMAGE, "make-qga-config.py"),
                    "--allow-set-password", "--output", str(out)], check=True)
    assert set(blocked_in(str(out))) == set(blocked_in(CONF)) - {"guest-set-user-password"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# --- (c) the diskimage-builder element -------------------------------------------------------

RHEL_SYSCONFIG = """\
# This is a systemd environment file, not a shell script.
# BLOCK_RPCS=guest-file-open
BLACKLIST_RPC=guest-file-open,guest-file-close,guest-file-read,guest-exec,guest-exec-status
BLOCK_RPCS=guest-file-open,guest-exec
FILTER_RPC_ARGS="--allow-rpcs=guest-ping"
FSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook
"""


def _wheel(path: str) -> str:
    """A novaproxy wheel as pip would build it (only the layout matters here)."""
    wheel = os.path.join(path, "novaproxy-0.1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as z:
        for name in os.listdir(os.path.join(REPO, "guestd")):
            if name.endswith(".py"):
                z.write(os.path.join(REPO, "guestd", name), f"guestd/{name}")
        z.write(os.path.join(REPO, "novaproxy", "__init__.py"), "novaproxy/__init__.py")
        z.writestr("novaproxy-0.1.0.dist-info/METADATA", "Name: novaproxy\n")
    return wheel


def _sdist(path: str) -> str:
    sdist = os.path.join(path, "novaproxy-0.1.0.tar.gz")
    with tarfile.open(sdist, "w:gz") as t:
        t.add(os.path.join(REPO, "guestd"), "novaproxy-0.1.0/guestd",
              filter=lambda info: None if "__pycache__" in info.name else info)
        t.add(os.path.join(REPO, "setup.py"), "novaproxy-0.1.0/setup.py")
    return sdist


def run_element(work: str, source: str | None = None, qemu_ga: str = QEMU_GA,
                sysconfig: str | None = None, env: dict | None = None):
    """DIB's sequence on a fake image: hooks copied, extra-data.d, then install.d."""
    hooks, root = os.path.join(work, "hooks"), os.path.join(work, "root")
    for phase in ("extra-data.d", "install.d"):
        shutil.copytree(os.path.join(ELEMENT, phase), os.path.join(hooks, phase))
    # The image as package-installs leaves it: python3 and qemu-ga (this host's binaries),
    # the qemu-guest-agent unit (Debian's: no [Install], started by udev).
    for directory in ("usr/bin", "usr/sbin", "usr/lib/python3/dist-packages",
                      "usr/lib/systemd/system", "etc/sysconfig"):
        os.makedirs(os.path.join(root, directory), exist_ok=True)
    os.symlink("/usr/bin/python3", os.path.join(root, "usr/bin/python3"))
    os.symlink(qemu_ga, os.path.join(root, "usr/sbin/qemu-ga"))
    shutil.copy("/lib/systemd/system/qemu-guest-agent.service",
                os.path.join(root, "usr/lib/systemd/system/"))
    if sysconfig is not None:
        with open(os.path.join(root, "etc/sysconfig/qemu-ga"), "w") as f:
            f.write(sysconfig)
    base = {"PATH": os.environ["PATH"], "HOME": work,
            # DIB exports this function (bash) to extra-data.d: the elements' own paths.
            "BASH_FUNC_get_image_element_array%%":
                f'() {{ echo "[novaproxy-guestd]={ELEMENT}"; }}',
            **(env or {})}
    if source:
        base["DIB_NOVAPROXY_GUESTD_SOURCE"] = source
    extra = subprocess.run([os.path.join(hooks, "extra-data.d", "50-novaproxy-guestd")],
                           env={**base, "TMP_HOOKS_PATH": hooks},
                           capture_output=True, text=True, timeout=60)
    assert extra.returncode == 0, extra.stderr
    install = subprocess.run([os.path.join(hooks, "install.d", "75-novaproxy-guestd")],
                             env={**base, "NOVAPROXY_DESTDIR": root},
                             capture_output=True, text=True, timeout=60)
    assert install.returncode == 0, install.stderr
    return root, install


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


needs_systemctl = pytest.mark.skipif(
    not shutil.which("systemctl")
    or not os.path.exists("/lib/systemd/system/qemu-guest-agent.service"),
    reason="needs systemctl and Debian's qemu-guest-agent unit")


@needs_systemctl
@pytest.mark.parametrize("source", ["checkout", "wheel", "sdist"])
def test_the_element_installs_guestd_units_and_configuration(short_dir, source):
    src = {"checkout": None, "wheel": _wheel(short_dir), "sdist": _sdist(short_dir)}[source]
    root, install = run_element(os.path.join(short_dir, "dib"), src)
    assert "generating" not in install.stdout  # same qemu-ga version: the shipped file

    guestd_files = sorted(n for n in os.listdir(os.path.join(REPO, "guestd"))
                          if n.endswith(".py"))
    installed = os.path.join(root, LIB.lstrip("/"), "guestd")
    assert sorted(n for n in os.listdir(installed) if n.endswith(".py")) == guestd_files
    for name in guestd_files:
        with open(os.path.join(installed, name)) as a, \
                open(os.path.join(REPO, "guestd", name)) as b:
            assert a.read() == b.read()
        assert mode(os.path.join(installed, name)) == 0o644
    assert os.listdir(os.path.join(installed, "__pycache__"))  # compiled once, at build

    expected = {
        "usr/bin/guestd": (0o755, os.path.join(IMAGE, "bin", "guestd")),
        "usr/bin/guestd-ctl": (0o755, os.path.join(IMAGE, "bin", "guestd-ctl")),
        "usr/lib/systemd/system/guestd.service":
            (0o644, os.path.join(REPO, "deploy", "systemd", "guestd.service")),
        "etc/qemu/qemu-ga.conf": (0o644, CONF),
    }
    for path, (file_mode, source_file) in expected.items():
        with open(os.path.join(root, path)) as a, open(source_file) as b:
            assert a.read() == b.read(), path
        assert mode(os.path.join(root, path)) == file_mode, path
    for directory in ("etc/guestd/hooks.d", "etc/guestd/health.d"):
        assert mode(os.path.join(root, directory)) == 0o755
    with open(os.path.join(root, "usr/lib/python3/dist-packages/novaproxy-guestd.pth")) as f:
        assert f.read() == LIB + "\n"
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants/guestd.service")
    assert os.readlink(wants) == "/usr/lib/systemd/system/guestd.service"


def _run_launcher(root: str, name: str, argv: list, stdin: bytes, env: dict):
    """An installed launcher, run as the image would but with its path under ``root``."""
    with open(os.path.join(root, "usr/bin", name)) as f:
        text = f.read()
    assert text.startswith("#!/usr/bin/python3 -IS\n")
    assert f'sys.path.insert(0, "{LIB}")' in text
    text = text.replace(f'"{LIB}"', repr(os.path.join(root, LIB.lstrip("/"))))
    return subprocess.run(["/usr/bin/python3", "-IS", "-c", text, *argv], input=stdin,
                          capture_output=True, env=env, timeout=30)


@needs_systemctl
def test_the_installed_launchers_run_guestd_and_guestd_ctl(short_dir):
    from guestd import protocol

    root, _ = run_element(os.path.join(short_dir, "dib"))
    sock = os.path.join(short_dir, "guestd.sock")
    req = json.dumps(protocol.request("r1", "i-1", "reboot", "vote", 2.0, {}, "accept"))
    # No guestd yet: the guest "does not negotiate" (exit 0).
    done = _run_launcher(root, "guestd-ctl", [], req.encode(), {"GUESTD_SOCKET": sock})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == protocol.NOT_NEGOTIATING
    # With the installed guestd running: nobody registered, accept.
    with open(os.path.join(root, "usr/bin/guestd")) as f:
        daemon_text = f.read().replace(f'"{LIB}"', repr(os.path.join(root, LIB.lstrip("/"))))
    guestd = subprocess.Popen(
        ["/usr/bin/python3", "-IS", "-c", daemon_text, "--socket", sock,
         "--hooks-dir", os.path.join(root, "etc/guestd/hooks.d"),
         "--health-dir", os.path.join(root, "etc/guestd/health.d"),
         "--status-file", os.path.join(short_dir, "status.json"),
         "--spool-dir", os.path.join(short_dir, "spool"),
         "--outbox", os.path.join(short_dir, "outbox.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), 10, "the installed guestd")
        done = _run_launcher(root, "guestd-ctl", ["--timeout", "2"], req.encode(),
                             {"GUESTD_SOCKET": sock})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == "accept"
    finally:
        guestd.terminate()
        guestd.wait(10)


@needs_systemctl
def test_the_element_rewrites_the_rhel_sysconfig_lists(short_dir):
    root, _ = run_element(os.path.join(short_dir, "dib"), sysconfig=RHEL_SYSCONFIG)
    with open(os.path.join(root, "etc/sysconfig/qemu-ga")) as f:
        lines = f.read().splitlines()
    check_rhel_sysconfig(lines, short_dir)


def check_rhel_sysconfig(lines: list[str], work: str) -> None:
    blocked = ",".join(blocked_in(CONF))
    assert lines == [
        "# This is a systemd environment file, not a shell script.",
        "# BLOCK_RPCS=guest-file-open",  # comments stay as they are
        f"BLACKLIST_RPC={blocked}",
        f"BLOCK_RPCS={blocked}",
        f'FILTER_RPC_ARGS="--allow-rpcs={",".join(sorted(ALLOWED))}"',
        "FSFREEZE_HOOK_PATHNAME=/etc/qemu-ga/fsfreeze-hook",
    ]
    # The unit passes it as --block-rpcs=${BLOCK_RPCS}: qemu-ga adds it to the file's list.
    empty = os.path.join(work, "empty.conf")
    open(empty, "w").close()
    assert dumped_block_list([f"--block-rpcs={blocked}"], empty) == set(blocked_in(CONF))


@needs_systemctl
def test_another_qemu_ga_version_gets_its_own_block_list(short_dir):
    # An agent that says it is 9.9: the element asks it for its commands.
    wrapper = os.path.join(short_dir, "qemu-ga-9.9")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\n[ "$1" = --version ] && { echo "QEMU Guest Agent 9.9.0"; exit 0; }\n'
                f'exec {QEMU_GA} "$@"\n')
    os.chmod(wrapper, 0o755)
    root, install = run_element(os.path.join(short_dir, "dib"), qemu_ga=wrapper,
                                env={"DIB_NOVAPROXY_QGA_SET_PASSWORD": "1"})
    assert "generating /etc/qemu/qemu-ga.conf for qemu-ga 9.9" in install.stdout
    conf = os.path.join(root, "etc/qemu/qemu-ga.conf")
    assert set(blocked_in(conf)) == set(blocked_in(CONF)) - {"guest-set-user-password"}
    assert mode(conf) == 0o644


def test_the_element_follows_dib_conventions():
    assert open(os.path.join(ELEMENT, "element-deps")).read().split() == ["package-installs"]
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(ELEMENT, "package-installs.yaml")) as f:
        assert set(yaml.safe_load(f)) == {"qemu-guest-agent", "python3"}
    for script in ("extra-data.d/50-novaproxy-guestd", "install.d/75-novaproxy-guestd"):
        path = os.path.join(ELEMENT, script)
        assert mode(path) == 0o755
        with open(path) as f:
            assert "set -euo pipefail" in f.read()
        subprocess.run(["bash", "-n", path], check=True)
    assert os.path.exists(os.path.join(ELEMENT, "README.rst"))


# --- (d) the cloud-init snippet --------------------------------------------------------------


def test_the_cloud_init_snippet_is_up_to_date():
    done = subprocess.run(["/usr/bin/python3", os.path.join(IMAGE, "make-cloud-init.py"),
                           "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_cloud_init_snippet_installs_what_the_element_installs(short_dir):
    yaml = pytest.importorskip("yaml")
    path = os.path.join(IMAGE, "cloud-init.yaml")
    with open(path) as f:
        text = f.read()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert set(config) == {"packages", "write_files", "runcmd"}
    assert {"qemu-guest-agent", "python3"} <= set(config["packages"])
    files = {entry["path"]: entry for entry in config["write_files"]}
    sources = {
        "/etc/qemu/qemu-ga.conf": ("0644", CONF),
        "/usr/bin/guestd": ("0755", os.path.join(IMAGE, "bin", "guestd")),
        "/usr/bin/guestd-ctl": ("0755", os.path.join(IMAGE, "bin", "guestd-ctl")),
        "/etc/systemd/system/guestd.service":
            ("0644", os.path.join(REPO, "deploy", "systemd", "guestd.service")),
    }
    assert set(files) == set(sources)
    for guest_path, (file_mode, source) in sources.items():
        with open(source) as f:
            assert files[guest_path]["content"] == f.read(), guest_path
        assert files[guest_path]["permissions"] == file_mode
    runcmd = "\n".join(config["runcmd"])
    # guestd goes where the launchers look for it; the operator's part is marked.
    assert f"--target {LIB} 'NOVAPROXY_WHEEL_URL_OR_PATH'" in runcmd
    assert "mkdir -p /etc/guestd/hooks.d /etc/guestd/health.d" in runcmd
    assert "systemctl enable --now guestd.service" in runcmd

    # Its RHEL sysconfig step, run on a copy, does what the element does.
    (step,) = [c for c in config["runcmd"] if "/etc/sysconfig/qemu-ga" in c]
    sysconfig = os.path.join(short_dir, "sysconfig-qemu-ga")
    with open(sysconfig, "w") as f:
        f.write(RHEL_SYSCONFIG)
    step = step.replace("/etc/sysconfig/qemu-ga", sysconfig).replace(
        "/etc/qemu/qemu-ga.conf", CONF)
    subprocess.run(["sh", "-c", step], check=True)
    with open(sysconfig) as f:
        check_rhel_sysconfig(f.read().splitlines(), short_dir)
    assert re.search(r"^python3 -c .*novaproxy-guestd\.pth", runcmd, re.M)
