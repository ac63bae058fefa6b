"""novaproxy-api: serve a paste pipeline with cheroot, a production threaded WSGI server.

Negotiations wait seconds for the guest, so each request holds a thread; size
``--threads`` for the negotiations you expect in flight at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from cheroot import wsgi
from paste.deploy import loadapp


def load(paste_file: str, name: str = "main"):
    return loadapp(f"config:{os.path.abspath(paste_file)}", name=name)


def _bind(text: str) -> tuple:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 0.0.0.0:8774")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="novaproxy-api", description=__doc__.splitlines()[0])
    parser.add_argument("--paste", required=True, help="paste.ini holding the pipeline 'main'")
    parser.add_argument("--bind", type=_bind, default=("0.0.0.0", 8774), help="HOST:PORT")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        app = load(args.paste)
    except (ValueError, LookupError, OSError) as exc:
        print(f"novaproxy-api: cannot load {args.paste}: {exc}", file=sys.stderr)
        return 2
    server = wsgi.Server(args.bind, app, numthreads=args.threads, server_name="novaproxy",
                         request_queue_size=128)
    signal.signal(signal.SIGTERM, _terminate)
    log = logging.getLogger("novaproxy.api")
    log.info("serving %s on %s:%d with %d threads", args.paste, *args.bind, args.threads)
    try:
        server.safe_start()
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping")
    finally:
        server.stop()
    return 0


def _terminate(signum, frame):
    # Unwinds safe_start() in the main thread, which then stops the server
    # cleanly; calling stop() from the handler itself can deadlock.
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
