"""A vm-tier guest whose vCPUs the proxy scales: the guest's application (a vote hook
baked into the initramfs), what it saw, the guest's own view of its vCPUs, and the
``novaproxy-scale`` action through real novaclient.

The hook logs every notice guestd hands it (the JSON it gets on stdin, one line in
:data:`HOOK_LOG`), rejects votes while :data:`VETO` exists (its first line is the
reason) and, to a prepare, offers the vCPUs written in :data:`PICK` (the hooks'
``{"offline": [...]}`` line). Everything lives under ``/run``: a reboot clears it.
"""

from __future__ import annotations

import json

from harness.processes import wait_for
from harness.vm_guest import VMGuest
from novaproxy import redis_schema, scaling

HOOK = "50-scale-app"
HOOK_LOG = "/run/scale-app.log"
VETO = "/run/veto"
PICK = "/run/pick"
CPU_ONLINE = "/sys/devices/system/cpu/online"
HOOK_SCRIPT = f"""#!/bin/sh
# The vm tier's scaling application, run by guestd as `{HOOK} EVENT PHASE`.
notice=$(cat)
printf '%s\\n' "$notice" >> {HOOK_LOG}
if [ "$2" = vote ] && [ -e {VETO} ]; then
    head -n 1 {VETO}
    exit 1
fi
if [ "$2" = prepare ] && [ -e {PICK} ]; then
    cat {PICK}
fi
exit 0
"""
# What build_initrd adds to the guest image.
FILES = {f"/etc/guestd/hooks.d/{HOOK}": HOOK_SCRIPT}


def scale(nova, server_id: str, **args) -> dict:
    """``{"novaproxy-scale": args}`` through novaclient; the 200's body (its inner dict).
    novaclient raises its own exceptions for the error answers."""
    body = nova.servers._action(scaling.ACTION, server_id, args)
    return body[scaling.ACTION]


class ScaledGuest(VMGuest):
    """The guest, read through its qemu-ga."""

    def online(self) -> str:
        """The guest kernel's own list of online CPUs (``"0-2"``, ``"0"``, ``"0,2"``)."""
        return self.read(CPU_ONLINE).strip()

    def notices(self) -> list:
        """Every notice the hook got since the guest booted, oldest first."""
        return [json.loads(line) for line in self.read(HOOK_LOG).splitlines() if line]

    def wait_notices(self, count: int, timeout: float = 30.0) -> list:
        """At least ``count`` notices (an end is sent after the caller has its answer)."""
        def enough() -> list | None:
            seen = self.notices()
            return seen if len(seen) >= count else None

        return wait_for(enough, timeout, f"{count} notices in the guest's hook log",
                        interval=0.2)

    def veto(self, reason: str | None) -> None:
        """Votes rejected with ``reason`` from now on (None: accepted again)."""
        if reason is None:
            self.run(f"rm -f {VETO}")
        else:
            self.run(f'printf "%s\\n" "$1" > {VETO}', reason)

    def pick(self, cpus: list | None) -> None:
        """The vCPUs a scale-down's prepare offers from now on (None: no offer)."""
        if cpus is None:
            self.run(f"rm -f {PICK}")
        else:
            self.run(f'printf "%s\\n" "$1" > {PICK}', json.dumps({"offline": cpus}))


def phases(notices: list) -> list:
    """``(event, phase)`` of each notice."""
    return [(n["event"], n["phase"]) for n in notices]


def wait_given_back(redis_url: str, instance: str, timeout: float = 30.0) -> None:
    """Until the proxy gives the server back: a 200 is answered before the end notice
    goes out, and the server is held until it has (the next operation's notices follow
    it), so a next action at once would be a 409 negotiation-in-progress."""
    client = redis_schema.connect(redis_url)
    try:
        wait_for(lambda: redis_schema.lock_owner(client, instance) is None, timeout,
                 f"the negotiation lock of {instance} given back", interval=0.05)
    finally:
        client.close()
