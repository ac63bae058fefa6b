#!/usr/bin/env bash
# Build the vm-tier guest: Debian's cloud kernel plus an initramfs that carries
# busybox, the virtio modules, qemu-ga, python3 with the part of the standard
# library guestd uses, guestd itself and /init (deploy/guest-image/init).
#
#   deploy/guest-image/build.sh [--extra DIR]... [OUT]     (OUT: .cache/guest-image)
#
# Writes OUT/vmlinuz and OUT/initrd.img and prints their paths; does nothing when
# its inputs have not changed. --extra DIR lays DIR's files over the image root
# (e.g. DIR/etc/guestd/hooks.d/10-app): the initrd printed is then
# OUT/initrd-<hash of the extras>.img, initrd.img with a cpio of DIR appended
# (the kernel unpacks concatenated archives in order), so extras cost no rebuild
# and never replace the plain image.
# Needs root (device node, chroot check), apt-get, cpio, and the host's
# /usr/bin/python3 and /usr/sbin/qemu-ga (packages python3, qemu-guest-agent),
# which are copied in with the libraries ldd lists.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
extras=()
out=""
while (($#)); do
    case "$1" in
        --extra) extras+=("$(realpath "$2")"); shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) out="$1"; shift ;;
    esac
done
out="${out:-$repo/.cache/guest-image}"
mkdir -p "$out"
out="$(realpath "$out")"
# A cache, never to be committed (the directory ignores itself).
[ -e "$out/.gitignore" ] || echo '*' > "$out/.gitignore"

say() { echo "guest-image: $*" >&2; }

# Virtio PCI transport, the virtio-serial ports, the ACPI power button and the
# event device acpid reads; their dependencies are found in the .ko files.
MODULES=(virtio_pci virtio_console button evdev)

# --- the Debian packages, downloaded once (not installed) -----------------------
# Delete OUT/debs to move to a newer kernel or busybox.
debs="$out/debs"
mkdir -p "$debs"
cached() { find "$debs" -maxdepth 1 -name "$1" ! -name 'linux-image-cloud-amd64_*' | head -n1; }
if [ -z "$(cached 'linux-image-*-cloud-amd64_*.deb')" ] || [ -z "$(cached 'busybox-static_*.deb')" ]; then
    # Fresh package lists: an old list may name a kernel the archive no longer has.
    say "downloading the kernel and busybox packages"
    apt-get update -qq
fi
fetch() {  # fetch PACKAGE: download it into $debs unless a version of it is there
    if [ -z "$(cached "${1}_*.deb")" ]; then
        # Root's directories are not _apt's: apt downloads unsandboxed and says so.
        (cd "$debs" && apt-get download -qq "$1" 2>&1 | grep -v "unsandboxed" >&2 || true)
        [ -n "$(cached "${1}_*.deb")" ] || { say "could not download $1"; exit 1; }
    fi
    cached "${1}_*.deb"
}
kernel_pkg="$(cached 'linux-image-*-cloud-amd64_*.deb')"
if [ -z "$kernel_pkg" ]; then
    # linux-image-cloud-amd64 is a meta package: its dependency is the real kernel.
    name="$(apt-cache depends linux-image-cloud-amd64 \
        | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1)"
    [ -n "$name" ] || { say "no linux-image-*-cloud-amd64 behind linux-image-cloud-amd64"; exit 1; }
    kernel_pkg="$(fetch "$name")"
fi
busybox_pkg="$(fetch busybox-static)"

python="$(realpath /usr/bin/python3)"
qemu_ga=/usr/sbin/qemu-ga
[ -x "$qemu_ga" ] || { say "$qemu_ga missing: apt-get install qemu-guest-agent"; exit 1; }

# --- is the cached image current? ---------------------------------------------------
inputs_hash() {
    {
        # Names relative to the repo: the same however the script is called.
        (cd "$repo" && sha256sum deploy/guest-image/{build.sh,init,stdlib_files.py} guestd/*.py)
        basename "$kernel_pkg"; basename "$busybox_pkg"
        sha256sum "$python" "$qemu_ga"
    } | sha256sum | cut -d' ' -f1
}
extras_hash() {
    local dir
    for dir in "${extras[@]}"; do
        (cd "$dir" && find . -print0 | LC_ALL=C sort -z | xargs -0 -r stat -c '%n %a %s' \
            && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    done | sha256sum | cut -d' ' -f1
}
base_stamp="$(inputs_hash)"
initrd="$out/initrd.img"
if ((${#extras[@]})); then
    initrd="$out/initrd-$(echo "$base_stamp $(extras_hash)" | sha256sum | cut -c1-12).img"
fi
if [ -f "$out/vmlinuz" ] && [ -f "$initrd" ] \
        && [ "$(cat "$out/stamp" 2>/dev/null)" = "$base_stamp" ]; then
    echo "$out/vmlinuz"; echo "$initrd"
    exit 0
fi

tmp="$(mktemp -d /tmp/np-guest-image.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

if [ ! -f "$out/initrd.img" ] || [ "$(cat "$out/stamp" 2>/dev/null)" != "$base_stamp" ]; then
    say "building the initramfs ($(basename "$kernel_pkg"))"
    stage="$tmp/root"
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib64,proc,sys,dev,run,tmp,root,var/log} \
        "$stage"/etc/guestd/{hooks.d,health.d} "$stage/etc/acpi/PWRF"
    # The kernel gives /init its console through /dev/console before devtmpfs is up.
    mknod -m 600 "$stage/dev/console" c 5 1

    # The kernel: vmlinuz and the modules we load, with what they depend on.
    dpkg-deb -x "$kernel_pkg" "$tmp/kernel"
    cp "$tmp/kernel"/boot/vmlinuz-* "$tmp/vmlinuz"
    kver="$(basename "$(find "$tmp/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d)")"
    moddir="$stage/lib/modules/$kver"
    mkdir -p "$moddir"
    pending=("${MODULES[@]}")
    while ((${#pending[@]})); do
        m="${pending[0]}"
        pending=("${pending[@]:1}")
        [ -e "$moddir/$m.ko" ] && continue
        ko="$(find "$tmp/kernel/lib/modules/$kver" -name "$m.ko" | head -n1)"
        [ -n "$ko" ] || { say "module $m not in $kver"; exit 1; }
        cp "$ko" "$moddir/"
        deps="$(grep -a -o 'depends=[a-z0-9_,-]*' "$ko" | head -n1 | cut -d= -f2 | tr , ' ')"
        for d in $deps; do pending+=("$d"); done
    done

    # busybox and its applets (symlinks wherever busybox would install them).
    dpkg-deb -x "$busybox_pkg" "$tmp/busybox"
    cp "$tmp/busybox/bin/busybox" "$stage/bin/busybox"
    for applet in $("$stage/bin/busybox" --list-full); do
        [ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
    done
    # modules.dep, so that /init can modprobe in dependency order.
    "$stage/bin/busybox" depmod -b "$stage" "$kver"

    # copy_elf FILE [DEST]: a dynamically linked program or library and its libraries.
    copy_elf() {
        local file="$1" dest="${2:-$1}" lib
        mkdir -p "$stage/$(dirname "$dest")"
        cp -L "$file" "$stage/$dest"
        for lib in $(ldd "$file" | awk '/=> \//{print $3} /^\t\//{print $1}'); do
            if [ ! -e "$stage/$lib" ]; then
                mkdir -p "$stage/$(dirname "$lib")"
                cp -L "$lib" "$stage/$lib"
            fi
        done
    }
    copy_elf "$qemu_ga"

    # python3 with only the standard library modules guestd's processes import.
    pyver="$(basename "$python")"  # python3.11
    stdlib="$("$python" -S -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
    copy_elf "$python" "/usr/bin/$pyver"
    ln -s "$pyver" "$stage/usr/bin/python3"
    "$python" -S "$here/stdlib_files.py" "$repo" > "$tmp/stdlib.txt"
    while read -r file; do
        case "$file" in
            *.so) copy_elf "$file" ;;
            *) mkdir -p "$stage/$(dirname "$file")"; cp "$file" "$stage/$file" ;;
        esac
    done < "$tmp/stdlib.txt"
    # guestd goes next to the standard library: found even by python3 -IS.
    mkdir -p "$stage/$stdlib/guestd"
    cp "$repo"/guestd/*.py "$stage/$stdlib/guestd/"
    # Byte-compiled once here, not at every boot; unchecked-hash: no mtime checks.
    "$python" -S -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        -s "$stage" -p / "$stage/$stdlib"
    cat > "$stage/usr/bin/guestd-ctl" <<'EOF'
#!/usr/bin/python3 -IS
import sys
from guestd.ctl import main
sys.exit(main())
EOF
    chmod 755 "$stage/usr/bin/guestd-ctl"

    install -m 755 "$here/init" "$stage/init"
    # ACPI power button (libvirt shutdown): busybox acpid runs this file.
    printf '#!/bin/sh\n# The ACPI power button: power off now (nothing to flush).\n%s\n' \
        'echo "acpid: power button, powering off" >/dev/console; poweroff -f' \
        > "$stage/etc/acpi/PWRF/00000080"
    chmod 755 "$stage/etc/acpi/PWRF/00000080"
    # qemu-ga's guest-shutdown runs /sbin/shutdown -P|-H|-r +0 MESSAGE.
    rm -f "$stage/sbin/shutdown"
    cat > "$stage/sbin/shutdown" <<'EOF'
#!/bin/sh
# qemu-ga's guest-shutdown: -r reboots, -H halts, -P (or anything else) powers off.
case "$1" in -r) exec reboot -f ;; -H) exec halt -f ;; *) exec poweroff -f ;; esac
EOF
    chmod 755 "$stage/sbin/shutdown"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$stage/etc/passwd"
    printf 'root:x:0:\n' > "$stage/etc/group"

    # Smoke test on the host: the copied python3 imports guestd with this stdlib only.
    chroot "$stage" /usr/bin/python3 -IS -c \
        'import guestd.daemon, guestd.ctl, guestd.client, guestd.hooks' \
        || { say "python3 in the image cannot import guestd"; exit 1; }

    (cd "$stage" && find . -print0 | LC_ALL=C sort -z \
        | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -6 > "$tmp/initrd.img"
    rm -f "$out/stamp" "$out"/initrd-*.img  # variants of the previous image
    mv "$tmp/vmlinuz" "$out/vmlinuz"
    mv "$tmp/initrd.img" "$out/initrd.img"
    echo "$base_stamp" > "$out/stamp"
    say "initrd.img $(du -h "$out/initrd.img" | cut -f1), kernel $(du -h "$out/vmlinuz" | cut -f1)," \
        "built in $((SECONDS - start))s"
fi

if [ "$initrd" != "$out/initrd.img" ]; then
    find "$out" -maxdepth 1 -name 'initrd-*.img' -mtime +7 -delete  # old test variants
    cp "$out/initrd.img" "$tmp/initrd.img"
    for dir in "${extras[@]}"; do
        # Not ".": the kernel would give the image root the mode of DIR.
        (cd "$dir" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
            | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -6 >> "$tmp/initrd.img"
    done
    mv "$tmp/initrd.img" "$initrd"
fi
echo "$out/vmlinuz"
echo "$initrd"
