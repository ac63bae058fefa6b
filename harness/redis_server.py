"""A real redis-server on a free port, for one run."""

from __future__ import annotations

import os
import shutil

import redis

from harness.processes import Process, free_port, wait_for


class RedisServer:
    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install the Debian package redis-server")
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = Process(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--maxclients", "10000"],
            os.path.join(workdir, "redis.log"))
        client = redis.Redis(port=self.port)
        wait_for(client.ping, 10, "redis-server")
        client.close()

    def stop(self) -> None:
        self.process.stop()
