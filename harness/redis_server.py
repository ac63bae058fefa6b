"""A real redis-server on a free port, for one run, and the faults it can be put through.

API (every method waits until the server is in the state it names):

- ``RedisServer(workdir, appendonly=False)``: started on a free port; ``.url``, ``.port``.
  With ``appendonly`` every write is fsynced to an append-only file before Redis answers,
  so a SIGKILLed server restarted with ``keep_data=True`` has lost nothing.
- ``stop()``: SIGTERM (a frozen server is thawed first), as an operator's restart would.
- ``kill()``: SIGKILL: no shutdown, clients see their connections reset.
- ``freeze()`` / ``thaw()``: SIGSTOP / SIGCONT: the port still accepts connections (the
  kernel's backlog) but nothing is answered, as with a hung or swapping server.
- ``start(keep_data)``: start a stopped or killed server again on the same port. With
  ``keep_data`` it loads what was saved (the last ``save()``, or everything written with
  ``appendonly``); without, it starts empty, as a Redis without persistence does.
- ``restart(keep_data, kill=False)``: with ``keep_data`` (and no ``appendonly``) a
  ``SHUTDOWN SAVE``, which snapshots and stops in one step, so no write is lost in
  between; else ``stop()``. With ``kill``: ``save()`` if ``keep_data``, then ``kill()``
  (what is written after the snapshot is lost, as with a crash). Then ``start(keep_data)``.
- ``save()``: a synchronous RDB snapshot (SAVE) of what the server holds now.
- ``running`` / ``frozen``: the server's state as this object left it.
"""

from __future__ import annotations

import os
import shutil
import signal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from harness.processes import Process, free_port, wait_for

DUMP_FILE = "dump.rdb"
AOF_DIR = "appendonlydir"


class RedisServer:
    def __init__(self, workdir: str, appendonly: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server not found: install the Debian package redis-server")
        os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.frozen = False
        self.process: Process | None = None
        self._start()

    def _start(self) -> None:
        # No automatic snapshots: what survives a restart is what a test chose to keep.
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.workdir, "--dbfilename", DUMP_FILE, "--maxclients", "10000"]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always", "--appenddirname", AOF_DIR]
        else:
            argv += ["--appendonly", "no"]
        self.process = Process(argv, os.path.join(self.workdir, "redis.log"))
        client = self._client()
        try:
            # A server loading its data answers LOADING: ping() raises until it is done.
            wait_for(client.ping, 10, "redis-server")
        finally:
            client.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    def _client(self) -> redis.Redis:
        # No retries of its own (redis-py 8 would retry ten times): wait_for polls.
        return redis.Redis(port=self.port, socket_timeout=10, socket_connect_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    def save(self) -> None:
        client = self._client()
        try:
            client.save()
        finally:
            client.close()

    def freeze(self) -> None:
        self.process.signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self.process.signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.frozen:
            self.thaw()  # a stopped process cannot handle SIGTERM
        self.process.stop()

    def kill(self) -> None:
        if self.process is None:
            return
        self.process.signal(signal.SIGKILL)
        self.process.popen.wait(10)
        self.process.stop()  # closes the log
        self.frozen = False

    def start(self, keep_data: bool) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        if not keep_data:
            if os.path.exists(os.path.join(self.workdir, DUMP_FILE)):
                os.remove(os.path.join(self.workdir, DUMP_FILE))
            shutil.rmtree(os.path.join(self.workdir, AOF_DIR), ignore_errors=True)
        self._start()

    def restart(self, keep_data: bool, kill: bool = False) -> None:
        snapshot = keep_data and not self.appendonly
        if kill:
            if snapshot:
                self.save()
            self.kill()
        elif snapshot:
            self._shutdown_saving()
        else:
            self.stop()
        self.start(keep_data)

    def _shutdown_saving(self) -> None:
        """SHUTDOWN SAVE: a save, then a stop in which no client is served any more.
        (A SAVE followed by SIGTERM loses what clients wrote in between.)"""
        if self.frozen:
            self.thaw()
        client = self._client()
        try:
            client.shutdown(save=True)  # returns once the connection drops
        finally:
            client.close()
        self.process.popen.wait(10)
        self.process.stop()  # closes the log
