#!/usr/bin/env python3
"""An example guest application: a database that refuses to be stopped mid-replication.

It registers with guestd as ``--name`` and votes NACK (with the reason) while
the file ``--busy-file`` exists, e.g. while a replication or backup runs. On
prepare it gets ready (here: says so), on abort it resumes, on end it notes the
operation is over.

    python3 guest_app.py --name db --busy-file /run/db/replicating
"""

import argparse
import logging
import os
import signal
import sys

from guestd.client import Application, Vote


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="db")
    parser.add_argument("--busy-file", required=True)
    parser.add_argument("--socket", default=None, help="guestd socket (default: $GUESTD_SOCKET)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(message)s")
    log = logging.getLogger(args.name)

    def vote(notice):
        if os.path.exists(args.busy_file):
            with open(args.busy_file) as f:
                reason = f.read().strip() or "busy"
            log.info("NACK %s (%s): %s", notice.event, notice.details, reason)
            return Vote.reject(reason)
        log.info("ACK %s (%s)", notice.event, notice.details)
        return Vote.accept()

    def notice(notice):
        actions = {"prepare": "flushing to disk and handing over leadership",
                   "abort": "operation called off; resuming service",
                   "end": "operation complete"}
        log.info("%s %s: %s", notice.event, notice.phase, actions.get(notice.phase, "noted"))

    app = Application(args.name, on_vote=vote, on_notice=notice, socket_path=args.socket)
    signal.signal(signal.SIGTERM, lambda *_: app.stop())
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
