"""The whole novaproxy system on one machine, on real components.

redis-server; a real Nova API with two fake-driver computes; one
novaproxy-agent per compute host (qga-socket mode); novaproxy-api in front of
Nova; and, per booted server, a "guest" (qemu-ga + guestd) on the host that
Nova placed it on.
"""

from __future__ import annotations

import configparser
import os
import sys
import threading
import time
import urllib.error
import urllib.request

from keystoneauth1 import session as ks_session
from keystoneauth1.token_endpoint import Token
from novaclient import client as nova_client

from guestd import protocol
from harness.guest import OUTBOX_FILE, REPO, SPOOL_DIR, Guest, write_guestd_ctl
from harness.processes import Process, free_port, wait_for
from harness.recording_http import RecordingEndpoint
from harness.redis_server import RedisServer
from novaproxy import redis_schema

IMAGE = "155d900f-4e14-4e4c-a73d-069cbf4541e6"  # an image of Nova's Glance fixture
MICROVERSION = "2.96"
ADMIN_TOKEN = "admin:demo"  # the Nova fixture reads user:project from the token
# The default interval and threshold; a short grace, so that a test sees a silent
# guest reported in seconds.
MONITOR_BOOT_GRACE = 8.0
# Inside a real guest (deploy/guest-image), as in production: what a libvirt-mode
# agent runs through guest-exec (guestd writes its status where it does by default).
GUEST_GUESTD_CTL = "/usr/bin/guestd-ctl"


def _http_ok(url: str) -> bool:
    """The server answers (any status below 500)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


class Stack:
    def __init__(self, workdir: str, computes=("compute1", "compute2"),
                 log=lambda message: None, in_process: bool = False,
                 monitoring: dict | None = None, libvirt: dict | None = None) -> None:
        """``in_process``: the negotiation filter runs inside nova-api's own pipeline
        (deploy/nova-api-paste.ini) and no separate proxy is started. ``monitoring``:
        the agents' [monitoring] options over the harness's own. ``libvirt``: host ->
        libvirt URI, for hosts whose agent runs in libvirt mode (real VMs, defined
        with their servers' UUIDs) instead of serving host-process guests."""
        self.workdir = workdir
        self.libvirt = dict(libvirt or {})
        self.monitoring = {"boot_grace": MONITOR_BOOT_GRACE, "recovery_timeout": 60,
                           "nova_refresh": 2,
                           # qemu-ga runs in the guest's directory (see harness.guest).
                           "status_file": "guestd-status.json", **(monitoring or {})}
        self.in_process = in_process
        self.computes = list(computes)
        self.log = log
        self.guests: dict = {}
        self.agents: dict = {}
        self.booted: list = []
        self._processes: list = []
        os.makedirs(workdir, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": REPO}
        self.guestd_ctl = write_guestd_ctl(os.path.join(workdir, "guestd-ctl"))
        self._stopping = threading.Event()
        self._follower = None
        # When the follower's last complete round asked Nova (time.time()).
        self._followed = 0.0
        self._round_done = threading.Condition()
        try:
            self._start()
            self._follower = threading.Thread(target=self._follow, name="follow-vms",
                                              daemon=True)
            self._follower.start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.log("starting redis-server")
        self.redis = RedisServer(os.path.join(self.workdir, "redis"))
        self._processes.append(self.redis)
        self.log(f"redis-server on {self.redis.url}")

        port = free_port()
        argv = [sys.executable, "-m", "harness.nova_api", "--port", str(port),
                "--computes", ",".join(self.computes)]
        if self.in_process:
            argv += ["--api-paste", self._nova_paste()]
        self.log("starting the Nova API (nova's functional fixtures, fake virt driver)"
                 + (" with the negotiation filter in its own pipeline" if self.in_process else ""))
        self.nova_process = self._spawn("nova", argv)
        self.nova_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _http_ok(self.nova_url + "/"), 60, "the Nova API", interval=0.2)
        self.log(f"Nova API on {self.nova_url} with computes {', '.join(self.computes)}")

        # Masakari is not run here: a recording endpoint answers as its API would.
        self.masakari = RecordingEndpoint(default=(202, {"notification": {}}))
        self._processes.append(self.masakari)
        for host in self.computes:
            self.start_agent(host)
        if self.in_process:
            self.proxy_url = self.nova_url
            return

        self.proxy_port = free_port()
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self.paste_file = os.path.join(self.workdir, "paste.ini")
        self.write_paste(self.paste_file)
        self.proxy_process = self._spawn("proxy", [
            sys.executable, "-m", "novaproxy.api.server", "--paste", self.paste_file,
            "--bind", f"127.0.0.1:{self.proxy_port}"])
        wait_for(lambda: _http_ok(self.proxy_url + "/"), 30, "novaproxy-api")
        self.log(f"novaproxy-api on {self.proxy_url}, forwarding to {self.nova_url}")

    def write_paste(self, path: str, **negotiation) -> None:
        """etc/paste.ini with this stack's Redis and Nova (and ``negotiation`` overrides)."""
        paste = configparser.ConfigParser(interpolation=None)
        paste.read(os.path.join(REPO, "etc", "paste.ini"))
        paste["filter:negotiation"]["redis_url"] = self.redis.url
        for key, value in negotiation.items():
            paste["filter:negotiation"][key] = str(value)
        paste["app:forward"]["upstream"] = self.nova_url
        with open(path, "w") as f:
            paste.write(f)

    def _nova_paste(self) -> str:
        """deploy/nova-api-paste.ini pointed at this stack's Redis."""
        paste = configparser.ConfigParser(interpolation=None)
        paste.read(os.path.join(REPO, "deploy", "nova-api-paste.ini"))
        paste["filter:negotiation"]["redis_url"] = self.redis.url
        path = os.path.join(self.workdir, "nova-api-paste.ini")
        with open(path, "w") as f:
            paste.write(f)
        return path

    def _spawn(self, name: str, argv: list) -> Process:
        process = Process(argv, os.path.join(self.workdir, f"{name}.log"), self.env)
        self._processes.append(process)
        return process

    def socket_dir(self, host: str) -> str:
        path = os.path.join(self.workdir, "hosts", host)
        os.makedirs(path, exist_ok=True)
        return path

    def start_agent(self, host: str) -> Process:
        config = os.path.join(self.workdir, f"agent-{host}.ini")
        uri, monitoring = self.libvirt.get(host), self.monitoring
        if uri is None:
            guests = (f"hypervisor = qga-socket\nqga_socket_dir = {self.socket_dir(host)}\n"
                      f"guestd_ctl = {' '.join(self.guestd_ctl)}\nspool_dir = {SPOOL_DIR}\n"
                      f"outbox_file = {OUTBOX_FILE}\n")
        else:  # the VM image's guestd spools in the default spool_dir
            guests = f"hypervisor = libvirt\nlibvirt_uri = {uri}\nguestd_ctl = {GUEST_GUESTD_CTL}\n"
            monitoring = {**monitoring, "status_file": protocol.DEFAULT_STATUS_FILE}
        with open(config, "w") as f:
            f.write(f"[agent]\nhost = {host}\nredis_url = {self.redis.url}\n{guests}"
                    f"route_interval = 0.5\noperation_interval = 0.3\n\n"
                    f"[nova]\nauth_type = admin_token\nendpoint = {self.nova_url}/v2.1\n"
                    f"token = {ADMIN_TOKEN}\n\n"
                    f"[masakari]\nauth_type = admin_token\nendpoint = {self.masakari.url}/v1\n"
                    f"token = {ADMIN_TOKEN}\n\n[monitoring]\n"
                    + "".join(f"{k} = {v}\n" for k, v in monitoring.items()))
        self.agents[host] = self._spawn(f"agent-{host}", [
            sys.executable, "-m", "novaproxy.agent.service", "--config", config])
        self.log(f"novaproxy-agent for {host}: guests "
                 + (f"in {self.socket_dir(host)}" if uri is None else f"through {uri}"))
        return self.agents[host]

    def restart_agent(self, host: str) -> Process:
        """Stop the host's agent (SIGTERM) and start a new one with the same config."""
        old = self.agents[host]
        old.stop()
        self._processes.remove(old)
        return self.start_agent(host)

    # -- clients ---------------------------------------------------------------

    def nova(self, token: str = ADMIN_TOKEN, direct: bool = False):
        """A real python-novaclient, pointed at the proxy (or straight at Nova)."""
        base = self.nova_url if direct else self.proxy_url
        sess = ks_session.Session(auth=Token(f"{base}/v2.1", token))
        return nova_client.Client(MICROVERSION, session=sess)

    def flavor(self, name: str, extra_specs: dict | None = None, vcpus: int = 1):
        nova = self.nova(direct=True)
        flavor = nova.flavors.create(name, 512, vcpus, 1)
        if extra_specs:
            flavor.set_keys(extra_specs)
        return flavor

    def boot(self, name: str, flavor, with_guest: bool = True, token: str = ADMIN_TOKEN,
             group: str | None = None):
        """Create a server through Nova and, on its host, its qemu-ga + guestd guest;
        ``group``: a server group's id to boot it into."""
        nova = self.nova(token, direct=True)
        hints = {"group": group} if group else None
        server = nova.servers.create(name, IMAGE, flavor, nics="none", scheduler_hints=hints)
        server = self.wait_for_server(server.id, "ACTIVE")
        host = getattr(self.nova(direct=True).servers.get(server.id), "OS-EXT-SRV-ATTR:host")
        self.booted.append(server.id)
        if with_guest:
            self.add_guest(server.id, host)
        return server, host

    def cleanup(self, keep: int = 0) -> None:
        """Delete the servers booted after the first ``keep`` ones and stop their guests."""
        nova = self.nova(direct=True)
        while len(self.booted) > keep:
            instance = self.booted.pop()
            guest = self.guests.pop(instance, None)
            if guest is not None:
                guest.stop()
                self._processes.remove(guest)
            try:
                nova.servers.force_delete(instance)
            except Exception:
                try:
                    nova.servers.delete(instance)
                except Exception:  # already gone
                    pass

    def add_guest(self, instance: str, host: str) -> Guest:
        guest = Guest(instance, self.socket_dir(host),
                      os.path.join(self.workdir, "guests", instance))
        self.guests[instance] = guest
        self._processes.append(guest)
        client = redis_schema.connect(self.redis.url)
        wait_for(lambda: redis_schema.route_of(client, instance) == host, 10,
                 f"the route of {instance}")
        return guest

    # -- the VMs' lives ----------------------------------------------------------

    RUNNING = ("ACTIVE", "VERIFY_RESIZE", "MIGRATING", "RESCUE")
    OFF = ("SHUTOFF", "SHELVED", "SHELVED_OFFLOADED", "SOFT_DELETED", "DELETED", "ERROR")
    FROZEN = ("PAUSED", "SUSPENDED")

    def _follow(self) -> None:
        """Play each guest's power state and host as Nova reports them.

        With the fake virt driver Nova changes only its database; this makes the
        "VMs" (qemu-ga + guestd on the host) follow, as libvirt would: powered
        off, frozen, or moved to another host's socket directory.
        """
        nova = self.nova(direct=True)
        known: dict = {}  # instance -> (status, host) as last seen
        since = None
        while not self._stopping.wait(0.1):
            # Only what changed since the last look (with a second of overlap);
            # changes-since also lists servers deleted meanwhile.
            opts = {"all_tenants": 1}
            if since:
                opts["changes-since"] = since
            try:
                started = time.time()
                for server in nova.servers.list(search_opts=opts):
                    known[server.id] = (server.status,
                                        getattr(server, "OS-EXT-SRV-ATTR:host", None))
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 1))
            except Exception:  # Nova busy or going away: next round
                continue
            for instance, guest in list(self.guests.items()):
                status, host = known.get(instance, ("BUILD", None))
                try:
                    if status in self.RUNNING and host:
                        if guest.state != "running" or not guest.qga_socket.startswith(
                                self.socket_dir(host) + os.sep):
                            guest.power_on(self.socket_dir(host))
                    elif status in self.OFF and guest.state != "off":
                        guest.power_off()
                    elif status in self.FROZEN and guest.state == "running":
                        guest.freeze()
                except Exception as exc:  # keep following the others
                    print(f"harness: guest {instance}: {exc}", file=sys.stderr)
            with self._round_done:
                self._followed = started
                self._round_done.notify_all()

    def caught_up(self, timeout: float = 30) -> None:
        """Return once the guests play Nova's state as of now: a round of the
        follower that asked Nova after this call has ended. (A stop and start in
        quick succession may otherwise still be played after Nova settled.)"""
        now = time.time()
        with self._round_done:
            if not self._round_done.wait_for(lambda: self._followed >= now, timeout):
                raise TimeoutError(f"the harness did not follow Nova within {timeout:g}s")

    def wait_settled(self, instance: str, timeout: float = 30) -> dict:
        """Wait until a guest can be faulted as a running VM: the harness plays
        Nova's state, no operation of the proxy's is in flight (its silence would
        be intended), and the monitor has heard this guest's qemu-ga since; a
        monitor view written before a stop and start still says "healthy".
        Returns that view."""
        self.caught_up(timeout)
        after = time.time()
        client = redis_schema.connect(self.redis.url)

        def settled() -> dict | None:
            if redis_schema.operations_of(client, [instance]).get(instance):
                return None
            view = redis_schema.monitor_view(client, instance)
            heard = float(view.get("last_answer") or 0)
            return view if view.get("state") == "healthy" and heard > after else None

        return wait_for(settled, timeout, f"guest {instance} settled and heard from",
                        interval=0.1)

    def wait_for_server(self, server_id: str, status: str, timeout: float = 30):
        nova = self.nova(direct=True)

        def settled():
            server = nova.servers.get(server_id)
            if server.status == "ERROR":
                raise RuntimeError(f"server {server_id} went to ERROR: {server.fault}")
            if server.status == status and getattr(server, "OS-EXT-STS:task_state") is None:
                return server
            return None

        return wait_for(settled, timeout, f"server {server_id} {status}", interval=0.1)

    def instance_actions(self, server_id: str) -> list:
        return [a.action for a in self.nova(direct=True).instance_action.list(server_id)]

    def stop(self) -> None:
        self._stopping.set()
        if self._follower is not None:
            self._follower.join(10)
        for process in reversed(self._processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {process}: {exc}", file=sys.stderr)
        self._processes.clear()


if __name__ == "__main__":  # a quick manual check: python -m harness.stack
    stack = Stack(f"/tmp/novaproxy-stack-{os.getpid()}", log=print)
    try:
        print("up; Ctrl-C to stop")
        time.sleep(3600)
    finally:
        stack.stop()
