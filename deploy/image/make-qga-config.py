#!/usr/bin/env python3
"""Write the qemu-ga configuration of a novaproxy guest: every RPC nobody uses is blocked.

qemu-ga 7.2 has ``block-rpcs`` only (no allow-list), so the block list is
"every command this qemu-ga has, minus :data:`ALLOWED`". The command list comes
from the qemu-ga itself: it is started on a temporary unix socket and asked
``guest-info``. Run this against the qemu-ga of the image (another version has
other commands) and ship its output::

    deploy/image/make-qga-config.py > deploy/image/qemu-ga.conf
    deploy/image/make-qga-config.py --qemu-ga /usr/bin/qemu-ga --output /etc/qemu/qemu-ga.conf

Standard library only: the diskimage-builder element runs it inside the image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# The one list of what the host may ask the guest agent; every other command is blocked.
ALLOWED: dict[str, str] = {
    # novaproxy-agent (novaproxy/agent/guest_agent.py, probe.py, deliver.py), directly or
    # through libvirt
    "guest-sync-delimited": "novaproxy-agent: resynchronise the channel",
    "guest-sync": "libvirt: resynchronise before every command",
    "guest-ping": "novaproxy-agent: liveness",
    "guest-info": "diagnostics: the agent's version and which commands are enabled",
    "guest-exec": "novaproxy-agent: run guestd-ctl with the request as stdin",
    "guest-exec-status": "novaproxy-agent: collect guestd-ctl's answer",
    "guest-file-open": "novaproxy-agent: guestd's status file, its spool's requests and answers",
    "guest-file-read": "novaproxy-agent: guestd's status file, its spool's requests and answers",
    "guest-file-close": "novaproxy-agent: guestd's status file, its spool's requests and answers",
    "guest-file-write": "novaproxy-agent: write a request into guestd's spool (no process start)",
    "guest-get-vcpus": "novaproxy-agent's vCPU calls: libvirt guestVcpus, setGuestVcpus",
    "guest-set-vcpus": "novaproxy-agent's vCPU calls: libvirt setGuestVcpus",
    # libvirt on behalf of Nova (nova/virt/libvirt/guest.py, driver.py)
    "guest-shutdown": "libvirt shutdown/reboot through the agent (Nova stop, soft reboot)",
    "guest-set-time": "libvirt setTime: Nova sync_guest_time after resume, unpause, migration",
    "guest-fsfreeze-freeze": "libvirt fsFreeze: Nova quiesces snapshots (os_require_quiesce)",
    "guest-fsfreeze-freeze-list": "libvirt fsFreeze with mount points",
    "guest-fsfreeze-thaw": "libvirt fsThaw: Nova quiesced snapshots",
}
# Blocked by default; allowed only with --allow-set-password: Nova's changePassword
# action ("openstack server set --root-password", libvirt setUserPassword).
SET_PASSWORD = "guest-set-user-password"


def guest_commands(qemu_ga: str, timeout: float = 10.0) -> tuple[str, list[str]]:
    """qemu-ga's version and the name of every command it has (enabled or not)."""
    with tempfile.TemporaryDirectory(prefix="qga-") as tmp:
        sock_path = os.path.join(tmp, "qga.sock")
        conf = os.path.join(tmp, "empty.conf")
        open(conf, "w").close()
        # An empty config (QGA_CONF), our own pid file and state dir: nothing of the
        # machine's qemu-ga setup is read or touched, a running agent is not disturbed.
        proc = subprocess.Popen(
            [qemu_ga, "-m", "unix-listen", "-p", sock_path, "-t", tmp,
             "-f", os.path.join(tmp, "qga.pid")],
            env={**os.environ, "QGA_CONF": conf},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            reply = _ask(sock_path, proc, {"execute": "guest-info"}, timeout)
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    info = reply.get("return") if isinstance(reply, dict) else None
    if not isinstance(info, dict) or not isinstance(info.get("supported_commands"), list):
        raise RuntimeError(f"unexpected guest-info reply: {reply!r:.300}")
    names = sorted(str(c["name"]) for c in info["supported_commands"])
    return str(info.get("version", "unknown")), names


def _ask(sock_path: str, proc: subprocess.Popen, request: dict, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"qemu-ga exited with {proc.returncode}: {err.strip()}")
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(sock_path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError("qemu-ga did not open its socket") from None
            time.sleep(0.02)
    with conn:
        # A fresh agent has nothing queued: one request, one reply line.
        conn.settimeout(max(deadline - time.monotonic(), 0.1))
        conn.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError("qemu-ga closed the connection")
            buf += chunk
    return json.loads(buf)


def allowed(allow_set_password: bool = False) -> list[str]:
    return sorted(ALLOWED) + ([SET_PASSWORD] if allow_set_password else [])


def render(version: str, commands: list[str], allow_set_password: bool = False) -> str:
    permitted = set(allowed(allow_set_password))
    blocked = [c for c in commands if c not in permitted]
    lines = [
        "# qemu-ga configuration of a novaproxy guest: every RPC that novaproxy-agent, libvirt",
        "# and Nova do not use is blocked (qemu-ga 7.2 has block-rpcs only, no allow-list).",
        f"# Generated by deploy/image/make-qga-config.py from qemu-ga {version}; regenerate it",
        "# for another qemu-ga version (newer ones have commands this list does not block).",
        "# Debian/Ubuntu: /etc/qemu/qemu-ga.conf. RHEL family: also /etc/sysconfig/qemu-ga.",
        "#",
        "# Allowed:",
    ]
    lines += [f"#   {name}" for name in sorted(permitted)]
    if not allow_set_password:
        lines += [
            "#",
            f"# Nova's changePassword (openstack server set --root-password) needs {SET_PASSWORD}:",
            f"# to allow it, delete \"{SET_PASSWORD}\" from block-rpcs below (or regenerate with",
            "# --allow-set-password).",
        ]
    lines += ["[general]", "block-rpcs=" + ",".join(blocked), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemu-ga", default=shutil.which("qemu-ga") or "/usr/sbin/qemu-ga",
                        help="the qemu-ga binary whose commands to read (default: %(default)s)")
    parser.add_argument("--output", "-o", help="write here (default: standard output)")
    parser.add_argument("--allow-set-password", action="store_true",
                        help=f"leave {SET_PASSWORD} enabled (Nova set-password)")
    parser.add_argument("--print-allowed", action="store_true",
                        help="print the allowed commands, comma-separated, and exit")
    args = parser.parse_args(argv)
    if args.print_allowed:
        print(",".join(allowed(args.allow_set_password)))
        return 0
    version, commands = guest_commands(args.qemu_ga)
    missing = sorted(set(ALLOWED) - set(commands))
    if missing:
        # Not fatal (older agents lack some), but the operator should know.
        print(f"warning: qemu-ga {version} lacks {', '.join(missing)}", file=sys.stderr)
    text = render(version, commands, args.allow_set_password)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
