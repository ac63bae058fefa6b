"""Replace a file whole: whoever reads it sees the old contents or the new, never a part.

The host reads guestd's status file at any moment, and a spooled answer as soon as its
name appears, both through qemu-ga; so both are written beside their place and renamed
over it.
"""

from __future__ import annotations

import contextlib
import itertools
import os

_temporaries = itertools.count(1)  # unique temporary names, whichever thread writes


def write(path: str, data: bytes, mode: int) -> None:
    """Put ``data`` in ``path`` with exactly ``mode`` (whatever the umask), atomically.

    Raises OSError, after removing its temporary file. The temporary file is opened
    with O_EXCL and O_NOFOLLOW: never written through a link someone left in its place.
    Its name starts with a dot and ends with ``.tmp``: whoever cleans up after a crash
    (the spool's sweep) can tell it.
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{next(_temporaries)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with open(fd, "wb") as f:
            os.fchmod(fd, mode)
            f.write(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
