"""Another novaproxy-api on a running stack, with its own options.

The stack's own proxy has etc/paste.ini's settings. A test that needs other ones
(``unreachable = reject``, a short ``read_timeout``, Nova reached through a
:class:`harness.fault_proxy.FaultProxy`) starts one more, as a real
``python -m novaproxy.api.server`` process in front of the same Redis, agents and
Nova::

    with start_proxy(stack, "strict", unreachable="reject") as strict:
        strict.nova().servers.reboot(server)
"""

from __future__ import annotations

import configparser
import os
import sys
from typing import Any

from keystoneauth1 import session as ks_session
from keystoneauth1.token_endpoint import Token
from novaclient import client as nova_client

from harness.processes import Process, free_port, wait_for
from harness.stack import ADMIN_TOKEN, MICROVERSION, Stack, _http_ok


class Proxy:
    """A novaproxy-api process; ``url``, its log at ``log_path``; stop it with :meth:`stop`
    (or use it as a context manager)."""

    def __init__(self, stack: Stack, name: str, upstream: str | None = None,
                 forward: dict | None = None, **negotiation: Any) -> None:
        """``upstream``: the forward app's (Nova's by default); ``forward``: other
        [app:forward] options; ``negotiation``: [filter:negotiation] options."""
        self.paste_file = os.path.join(stack.workdir, f"paste-{name}.ini")
        stack.write_paste(self.paste_file, **negotiation)
        paste = configparser.ConfigParser(interpolation=None)
        paste.read(self.paste_file)
        for key, value in {"upstream": upstream or stack.nova_url, **(forward or {})}.items():
            paste["app:forward"][key] = str(value)
        with open(self.paste_file, "w") as f:
            paste.write(f)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(stack.workdir, f"proxy-{name}.log")
        self.process = Process([sys.executable, "-m", "novaproxy.api.server", "--paste",
                                self.paste_file, "--bind", f"127.0.0.1:{port}"],
                               self.log_path, stack.env)
        try:
            wait_for(lambda: _http_ok(self.url + "/"), 30, f"novaproxy-api {name}")
        except BaseException:
            self.process.stop()
            raise

    def nova(self, token: str = ADMIN_TOKEN):
        """A python-novaclient pointed at this proxy."""
        sess = ks_session.Session(auth=Token(f"{self.url}/v2.1", token))
        return nova_client.Client(MICROVERSION, session=sess)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_proxy(stack: Stack, name: str, upstream: str | None = None,
                forward: dict | None = None, **negotiation: Any) -> Proxy:
    """Start another novaproxy-api on ``stack`` (see :class:`Proxy`); ``name`` names its
    paste file and log in the stack's work directory."""
    return Proxy(stack, name, upstream, forward, **negotiation)
