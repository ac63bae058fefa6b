"""The guestd daemon: applications register here and answer the host's requests.

guestd's parts, each in a module of its own, wired together here:

- :mod:`guestd.server`: the unix socket, where applications register and guestd-ctl
  relays the host's requests;
- :mod:`guestd.registry`: the registered applications, their notices and health;
- :mod:`guestd.dispatch`: one request handed to every application and hook, the answer;
- :mod:`guestd.outbox` and :mod:`guestd.groups`: server-group messaging, the messages
  applications send (the outbox file the host reads) and the host's deliveries and
  receipts;
- :mod:`guestd.spool`: requests the host drops in as files through qemu-ga, answered
  as relayed ones are;
- :mod:`guestd.status`: the status file rewritten every ``--status-interval``, a
  counter that proves guestd alive and the latest health of every application and
  :mod:`guestd.health` hook, which the host reads through qemu-ga.

Threads: the main one accepts connections; one per connection; ``status`` (the beat),
``health`` (the hooks, one at a time) and ``spool`` (the scan); one per spooled request
and per vote hook run while a request is answered. Every wait is bounded by the
request's own timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from guestd import group_protocol, health, protocol
from guestd.dispatch import Dispatcher
from guestd.groups import GroupRequests
from guestd.outbox import Outbox
from guestd.registry import Registry
from guestd.server import Server
from guestd.spool import Spool
from guestd.status import StatusFile

LOG = logging.getLogger("guestd")
DEFAULT_HOOKS_DIR = "/etc/guestd/hooks.d"
DEFAULT_HEALTH_DIR = "/etc/guestd/health.d"
DEFAULT_GROUP_HOOKS_DIR = "/etc/guestd/group.d"
DEFAULT_STATUS_INTERVAL = 1.0
DEFAULT_HEALTH_INTERVAL = 5.0
# A health hook's deadline when not given: its interval, at most this.
MAX_HEALTH_TIMEOUT = 10.0


class Guestd:
    """guestd's parts, started so that whoever waits for the socket finds the rest."""

    def __init__(self, socket_path: str, hooks_dir: str | None, status_file: str | None = None,
                 status_interval: float = DEFAULT_STATUS_INTERVAL, health_dir: str | None = None,
                 health_interval: float = DEFAULT_HEALTH_INTERVAL,
                 health_timeout: float | None = None, spool_dir: str | None = None,
                 outbox: str | None = None, group_hooks_dir: str | None = None) -> None:
        """``status_file`` None: no status file (and so no health hooks either);
        ``spool_dir`` None: no spool, requests come through the socket only;
        ``outbox`` None: applications cannot send group messages (they still get them)."""
        registry = Registry()
        self.outbox = Outbox(outbox) if outbox else None
        group = GroupRequests(registry, self.outbox, group_hooks_dir)
        handle = Dispatcher(registry, hooks_dir, group.handle).handle
        self.hooks_dir = hooks_dir
        self.server = Server(socket_path, registry, handle, self.outbox)
        self.health_hooks: health.HealthHooks | None = None
        self.status: StatusFile | None = None
        if status_file:  # the status file is where health hooks report
            checks = self.health_hooks = health.HealthHooks(
                health_dir, health_interval,
                health_timeout or min(health_interval, MAX_HEALTH_TIMEOUT))
            self.status = StatusFile(status_file, status_interval,
                                     lambda: registry.reports() + checks.reports())
        self.spool = Spool(spool_dir, handle) if spool_dir else None
        self._stopping = threading.Event()

    def serve(self, ready: threading.Event | None = None) -> None:
        """Start every part and serve the socket until :meth:`stop`."""
        if self.status is not None and self.health_hooks is not None:
            self.status.start()
            threading.Thread(target=self.status.run, args=(self._stopping,), name="status",
                             daemon=True).start()
            threading.Thread(target=self.health_hooks.run, args=(self._stopping,),
                             name="health", daemon=True).start()
            LOG.info("status every %gs in %s; health hooks in %s every %gs (deadline %gs)",
                     self.status.interval, self.status.path, self.health_hooks.directory,
                     self.health_hooks.interval, self.health_hooks.timeout)
        if self.spool is not None:
            self.spool.open()
            threading.Thread(target=self.spool.run, args=(self._stopping,), name="spool",
                             daemon=True).start()
        if self.outbox is not None:
            self.outbox.open()
        LOG.info("vote and notice hooks in %s", self.hooks_dir)
        # The socket last: whoever waits for it finds the status file and the spool.
        self.server.serve(ready)

    def stop(self) -> None:
        """Stop every part; the socket goes with them (:meth:`Server.stop` says why)."""
        self._stopping.set()
        self.server.stop()


def _seconds(value: str) -> float:
    """An interval or deadline option: the status file's own rule, (0, 3600]."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds in (0, 3600]")
    return seconds


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestd", description=__doc__.splitlines()[0])
    parser.add_argument("--socket",
                        default=os.environ.get("GUESTD_SOCKET", protocol.DEFAULT_SOCKET))
    parser.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR,
                        help="vote and notice hooks (default %(default)s)")
    parser.add_argument("--status-file", default=protocol.DEFAULT_STATUS_FILE,
                        help="rewritten every --status-interval for the host to read "
                             "(default %(default)s)")
    parser.add_argument("--status-interval", type=_seconds, default=DEFAULT_STATUS_INTERVAL,
                        metavar="SECONDS", help="default %(default)s")
    parser.add_argument("--health-dir", default=DEFAULT_HEALTH_DIR,
                        help="health hooks (default %(default)s)")
    parser.add_argument("--health-interval", type=_seconds, default=DEFAULT_HEALTH_INTERVAL,
                        metavar="SECONDS", help="default %(default)s")
    parser.add_argument("--health-timeout", type=_seconds, metavar="SECONDS",
                        help=f"a health hook's deadline (default: its interval, at most "
                             f"{MAX_HEALTH_TIMEOUT:g})")
    parser.add_argument("--spool-dir", default=protocol.DEFAULT_SPOOL_DIR,
                        help="where the host drops requests through qemu-ga's file RPCs "
                             "(default %(default)s; empty: none)")
    parser.add_argument("--outbox", default=group_protocol.DEFAULT_OUTBOX,
                        help="the group messages applications send, for the host to read "
                             "(default %(default)s; empty: none)")
    parser.add_argument("--group-hooks-dir", default=DEFAULT_GROUP_HOOKS_DIR,
                        help="hooks run with each group message (default %(default)s)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s guestd %(levelname)s %(message)s")
    daemon = Guestd(args.socket, args.hooks_dir, args.status_file, args.status_interval,
                    args.health_dir, args.health_interval, args.health_timeout,
                    args.spool_dir or None, args.outbox or None, args.group_hooks_dir)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    try:
        daemon.serve()
    except KeyboardInterrupt:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
