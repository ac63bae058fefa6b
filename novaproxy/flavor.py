"""The flavor extra specs that turn novaproxy on for a VM, and the one server
metadata key: every name, the values it takes, and how it is read.

An operator sets them on a flavor (``openstack flavor set --property
guest:negotiation=true``); the proxy reads them from the server it is about to
negotiate (:mod:`novaproxy.api.policy`), the agent from the servers it watches
(:mod:`novaproxy.agent.monitor`). A value that is not valid counts as unset: the
operator's default applies, and the agent logs the invalid monitoring specs.

- ``guest:negotiation`` (:data:`NEGOTIATION`): a true word turns negotiation on.
  As server metadata, a false word opts that one server out.
- ``guest:vote_timeout`` (:data:`VOTE_TIMEOUT`): seconds the guest has to vote,
  in (0, 300].
- ``guest:monitoring`` (:data:`MONITORING`): a true word: the agent monitors the
  VM, and the proxy records its operations so that the agent knows their
  silence is intended.
- ``guest:monitoring_interval`` (:data:`MONITORING_INTERVAL`): seconds between
  pings, from 0.2 to 60.
- ``guest:monitoring_threshold`` (:data:`MONITORING_THRESHOLD`): missed pings
  before a failure, from 1 to 100.
- ``guest:recovery`` (:data:`RECOVERY`): what the agent does about a failure,
  one of :data:`novaproxy.agent.monitor.RECOVERIES` (the agent's actions, which
  its own configuration picks from too).
- ``guest:group_messaging`` (:data:`GROUP_MESSAGING`): a true word: the VM may
  message the members of its Nova server group (``docs/group-messaging.md``). As
  server metadata, a false word opts that one server out.
- ``guest:vcpu_scaling`` (:data:`VCPU_SCALING`): a true word: the server's vCPUs may be
  taken offline and brought back inside the guest (:mod:`novaproxy.scaling`).
- ``guest:min_vcpus`` (:data:`MIN_VCPUS`): the fewest vCPUs left online, a whole
  number from 1 to the flavor's vCPUs (default 1).

True and false words are matched in any case.
"""

from __future__ import annotations

from dataclasses import dataclass

NEGOTIATION = "guest:negotiation"
VOTE_TIMEOUT = "guest:vote_timeout"
MONITORING = "guest:monitoring"
MONITORING_INTERVAL = "guest:monitoring_interval"
MONITORING_THRESHOLD = "guest:monitoring_threshold"
RECOVERY = "guest:recovery"
GROUP_MESSAGING = "guest:group_messaging"
VCPU_SCALING = "guest:vcpu_scaling"
MIN_VCPUS = "guest:min_vcpus"

TRUE_WORDS = ("true", "yes", "1", "on")
FALSE_WORDS = ("false", "no", "0", "off")


@dataclass(frozen=True)
class Range:
    """The values a number spec takes: ``low`` to ``high``, both included unless
    ``low_open`` (a timeout of 0 means nothing)."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low < value if self.low_open else self.low <= value
        return above and value <= self.high


MAX_VOTE_TIMEOUT = 300.0
RANGES = {
    VOTE_TIMEOUT: Range(0.0, MAX_VOTE_TIMEOUT, low_open=True),
    MONITORING_INTERVAL: Range(0.2, 60.0),  # no flavor pings more often than every 0.2 s
    MONITORING_THRESHOLD: Range(1, 100),
}


def enabled(specs: dict, name: str) -> bool:
    """The spec ``name`` is set to a true word."""
    return str(specs.get(name, "")).lower() in TRUE_WORDS


def opted_out(metadata: dict) -> bool:
    """The server's metadata turns negotiation off for it (a false word)."""
    return str(metadata.get(NEGOTIATION, "")).lower() in FALSE_WORDS


def messaging_opted_out(metadata: dict) -> bool:
    """The server's metadata turns group messaging off for it (a false word)."""
    return str(metadata.get(GROUP_MESSAGING, "")).lower() in FALSE_WORDS


def number(specs: dict, name: str, default: float | None) -> float | None:
    """The number spec ``name`` if set and in its range (:data:`RANGES`), else ``default``."""
    try:
        value = float(specs.get(name))
    except (TypeError, ValueError):
        return default
    return value if value in RANGES[name] else default


def invalid_number(specs: dict, name: str) -> str:
    """What is wrong with the number spec ``name`` as set ("" if unset or valid)."""
    if name not in specs or number(specs, name, None) is not None:
        return ""
    limits = RANGES[name]
    return f"{name}={specs[name]!r} (a number from {limits.low} to {limits.high})"
