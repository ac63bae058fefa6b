"""Wake when a file in one directory is created, closed after writing or moved in.

Linux inotify through ctypes (the standard library has no binding), so that the
spool costs the guest nothing while idle and a request is taken the moment qemu-ga
closes it, rather than at the next scan. Where inotify or ctypes is missing,
:class:`Unavailable` tells the caller to scan on a timer instead.
"""

from __future__ import annotations

import os
import select
import struct

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_IGNORED = 0x00008000  # the watch is gone: the directory was removed or unmounted
IN_ONLYDIR = 0x01000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class Unavailable(Exception):
    """inotify cannot watch this directory here."""


class DirectoryWatch:
    """An inotify watch on one directory; :meth:`wait` blocks until it changes."""

    def __init__(self, path: str) -> None:
        try:
            import ctypes  # not in every minimal python3: then the caller scans on a timer

            libc = ctypes.CDLL(None, use_errno=True)
            init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except (ImportError, OSError, AttributeError) as exc:
            raise Unavailable(f"no inotify: {exc}") from None
        add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise Unavailable(f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        if add_watch(fd, os.fsencode(path),
                     IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR) < 0:
            error = ctypes.get_errno()
            os.close(fd)
            raise Unavailable(f"inotify_add_watch {path}: {os.strerror(error)}")
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self.alive = True  # False once the directory it watched is gone

    def wait(self, timeout: float) -> bool:
        """True when something changed (or the kernel's queue overflowed, which may hide
        a change), False when ``timeout`` seconds passed quietly or the watch is gone."""
        if not self.alive or not self._poll.poll(max(timeout, 0) * 1000):
            return False
        changed = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return changed
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                if mask & IN_IGNORED:
                    self.alive = False
                else:
                    changed = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.alive = False
