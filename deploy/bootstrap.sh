#!/usr/bin/env bash
# Install what the demo, the tests and the benchmarks need, idempotently:
# Debian packages (redis-server, qemu-guest-agent, libvirt-dev, pkg-config;
# for the vm tier QEMU, libvirtd and cpio) and a Python venv in .venv with
# novaproxy and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(redis-server qemu-guest-agent libvirt-dev pkg-config python3-venv)
# The vm tier (tests/vm): TCG guests under a session-mode libvirtd, and the
# initramfs that deploy/guest-image/build.sh packs (its kernel and busybox are
# downloaded with apt-get download, not installed).
vm_packages=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu cpio)
packages+=("${vm_packages[@]}")
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "==> installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The package starts a system redis-server; ours run on their own ports.
fi

stamp=".venv/.novaproxy-installed"
want="$(cat setup.py requirements/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> creating the Python venv in .venv (nova's functional fixtures included; a few minutes)"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -c requirements/constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi
