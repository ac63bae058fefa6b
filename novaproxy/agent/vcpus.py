"""The guest's vCPUs through its agent: what it has online, and bringing some offline
or online (``guest-get-vcpus`` / ``guest-set-vcpus``), checked with the guest's own view.

The raw qemu-ga commands, not libvirt's typed calls, so that both guest agent clients
(:mod:`qga_socket`, :mod:`qga_libvirt`) serve it. The guest's answers are untrusted:
:func:`parse_view` accepts only a bounded list of well-formed entries, and a change is
done only once the guest's own view says so (:meth:`Vcpus.apply`).
"""

from __future__ import annotations

from dataclasses import dataclass

from novaproxy.agent.guest_agent import GuestAgent, GuestAgentError
from novaproxy.scaling import MAX_CPUS, ScaleError, cpu_list


@dataclass(frozen=True)
class View:
    """The guest's vCPUs as its agent reports them."""

    plugged: frozenset
    online: frozenset
    offlinable: frozenset  # those the guest says it can take offline


def parse_view(answer: object) -> View:
    """``guest-get-vcpus``' answer: ``[{"logical-id": n, "online": b, "can-offline": b}]``."""
    if not isinstance(answer, list) or not 0 < len(answer) <= MAX_CPUS:
        raise ScaleError(f"the guest's vCPU list is not one: {str(answer)[:60]}")
    plugged, online, offlinable = set(), set(), set()
    for entry in answer:
        cpu = entry.get("logical-id") if isinstance(entry, dict) else None
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < MAX_CPUS \
                or not isinstance(entry.get("online"), bool) or cpu in plugged:
            raise ScaleError(f"the guest's vCPU list is not one: {str(entry)[:60]}")
        plugged.add(cpu)
        if entry["online"]:
            online.add(cpu)
        if entry.get("can-offline") is True:
            offlinable.add(cpu)
    return View(frozenset(plugged), frozenset(online), frozenset(offlinable))


class Vcpus:
    """One guest's vCPUs, through ``qga`` (a :class:`GuestAgent`)."""

    def __init__(self, qga: GuestAgent) -> None:
        self._qga = qga

    def view(self, timeout: float) -> View:
        return parse_view(self._qga.execute("guest-get-vcpus", None, timeout))

    def apply(self, cpus: frozenset, online: bool, timeout: float) -> View:
        """Bring ``cpus`` online (or offline), then read the guest's view: the new one,
        once it shows them so (raises ScaleError, with what the guest did, otherwise)."""
        try:
            self._qga.execute("guest-set-vcpus", {"vcpus": [
                {"logical-id": cpu, "online": online} for cpu in sorted(cpus)]}, timeout)
        except GuestAgentError as exc:
            raise ScaleError(f"the guest agent did not set vCPUs {cpu_list(cpus)} "
                             f"{'online' if online else 'offline'}: {exc}") from None
        after = self.view(timeout)
        wrong = cpus - after.online if online else cpus & after.online
        if wrong:
            raise ScaleError(f"the guest still has vCPUs {cpu_list(wrong)} "
                             f"{'offline' if online else 'online'}; online now: "
                             f"{cpu_list(after.online)}")
        return after
