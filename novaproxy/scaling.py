"""vCPU scaling, the decisions (pure): the action's body, the flavor's policy, and which
vCPUs go offline or come back.

Stock Nova cannot change a server's vCPUs in place (a resize migrates and power-cycles
it), and its libvirt driver plugs every vCPU of the flavor at boot. So scaling here is
guest-level: the vCPUs stay plugged, and the agent brings them offline or online
inside the guest through the guest agent (``guest-set-vcpus``). The flavor's vCPUs are
the most a server runs, ``guest:min_vcpus`` the fewest, and CPU 0 is never taken
offline (Linux cannot).

The action is the proxy's own, never forwarded to Nova::

    POST /servers/{id}/action  {"novaproxy-scale": {"online": 2}}
    POST /servers/{id}/action  {"novaproxy-scale": {"step": "down"}}   # or "up": by one

Every refusal is a :class:`ScaleError` whose message says what to fix; the caller
answers it as a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from novaproxy import flavor

ACTION = "novaproxy-scale"
# The events the guest's applications see (vote, prepare, end, abort like any other).
SCALE_DOWN, SCALE_UP = "scale-down", "scale-up"
EVENTS = (SCALE_DOWN, SCALE_UP)
STEPS = {"down": -1, "up": 1}
# The agent's own requests from the proxy, answered through the guest agent and never
# taken to guestd (told apart by their phase): read a guest's vCPUs (event VCPUS), or
# apply a scale operation's change to them (its event).
VCPUS = "vcpus"
READ, APPLY = "read", "apply"
AGENT_PHASES = (READ, APPLY)
# How long reading a guest's vCPUs may take (guest-get-vcpus, for the proxy's plan and
# for the agent's evidence), and applying a change and reading it back: Linux takes a
# vCPU offline with stop_machine, which a busy host can make take seconds.
READ_TIMEOUT = 5.0
APPLY_TIMEOUT = 20.0


class ScaleError(Exception):
    """The request cannot be carried out as asked; the message says what to fix."""


@dataclass(frozen=True)
class Request:
    """What the caller asked: a number of vCPUs online, or one more or one fewer."""

    online: int | None = None
    step: int = 0


@dataclass(frozen=True)
class Policy:
    """What the flavor allows: scaling at all, and between how many vCPUs online."""

    enabled: bool
    minimum: int
    maximum: int


def parse_action(body: object) -> Request:
    """The ``novaproxy-scale`` action of a server action body (raises ScaleError)."""
    if not isinstance(body, dict) or set(body) != {ACTION}:
        raise ScaleError(f"the body must be {{\"{ACTION}\": {{...}}}} and nothing else")
    args = body[ACTION]
    if not isinstance(args, dict) or len(args) != 1:
        raise ScaleError(f"{ACTION} takes exactly one of \"online\": N or "
                         "\"step\": \"up\"|\"down\"")
    if "online" in args:
        online = args["online"]
        if isinstance(online, bool) or not isinstance(online, int) or online < 1:
            raise ScaleError(f"\"online\" must be a whole number of vCPUs, at least 1; "
                             f"got {online!r:.40}")
        return Request(online=online)
    step = args.get("step")
    if step not in STEPS:
        raise ScaleError(f"\"step\" must be \"up\" or \"down\"; got {step!r:.40}")
    return Request(step=STEPS[step])


def policy(specs: dict, vcpus: int) -> Policy:
    """The policy of a flavor with ``vcpus`` and extra ``specs``; an invalid
    ``guest:min_vcpus`` is a ScaleError (the operator's to fix), not a silent 1."""
    minimum = 1
    if flavor.MIN_VCPUS in specs:
        raw = str(specs[flavor.MIN_VCPUS])
        if not raw.isdigit() or not 1 <= int(raw) <= vcpus:
            raise ScaleError(f"the flavor's {flavor.MIN_VCPUS}={raw!r:.20} is not a whole "
                             f"number from 1 to its {vcpus} vCPUs: ask the operator to fix it")
        minimum = int(raw)
    return Policy(flavor.enabled(specs, flavor.VCPU_SCALING), minimum, vcpus)


def require_enabled(rules: Policy) -> None:
    """Raises ScaleError, saying who turns it on, unless the flavor allows scaling."""
    if not rules.enabled:
        raise ScaleError(f"vCPU scaling is not enabled for this server's flavor (the "
                         f"operator sets {flavor.VCPU_SCALING}=true on it)")


def target(request: Request, online: frozenset, rules: Policy) -> int:
    """How many vCPUs are to be online (``online``: the guest's own view now)."""
    require_enabled(rules)
    wanted = request.online if request.online is not None else len(online) + request.step
    if not rules.minimum <= wanted <= rules.maximum:
        raise ScaleError(f"{wanted} vCPU(s) online is out of range: this flavor allows "
                         f"{rules.minimum} ({flavor.MIN_VCPUS}) to {rules.maximum} (its "
                         f"vCPUs); {len(online)} are online now")
    if wanted == len(online):
        raise ScaleError(f"{wanted} vCPU(s) are online already")
    return wanted


def to_offline(online: frozenset, count: int, named: tuple = ()) -> frozenset:
    """The ``count`` vCPUs to take offline: those the guest's applications named first
    (when each is online and not CPU 0), then the highest online ones."""
    chosen: list = []
    for cpu in named:
        if len(chosen) < count and cpu in online and cpu != 0 and cpu not in chosen:
            chosen.append(cpu)
    for cpu in sorted(online - {0}, reverse=True):
        if len(chosen) < count and cpu not in chosen:
            chosen.append(cpu)
    if len(chosen) < count:
        raise ScaleError(f"only {len(online - {0})} vCPU(s) besides CPU 0 are online")
    return frozenset(chosen)


def to_online(online: frozenset, plugged: frozenset, count: int) -> frozenset:
    """The ``count`` lowest offline vCPUs of those ``plugged``, to bring online."""
    offline = sorted(plugged - online)
    if len(offline) < count:
        raise ScaleError(f"only {len(offline)} vCPU(s) are offline")
    return frozenset(offline[:count])


MAX_CPUS = 4096  # more than any flavor; a guest's answer naming more is not believed


@dataclass(frozen=True)
class Plan:
    """One scale operation as its vote and prepare put it to the guest."""

    event: str  # SCALE_DOWN or SCALE_UP
    online: frozenset  # online now, by the guest's own view
    plugged: frozenset
    target: int  # how many are to be online

    @property
    def count(self) -> int:
        """How many vCPUs change."""
        return abs(self.target - len(self.online))

    def change(self, named: tuple = ()) -> frozenset:
        """The vCPUs to take offline (the ``named`` first) or to bring online."""
        if self.event == SCALE_DOWN:
            return to_offline(self.online, self.count, named)
        return to_online(self.online, self.plugged, self.count)

    def details(self) -> dict:
        """What the vote and prepare say: the set online now, the count wanted, and the
        vCPUs that change unless the applications name others (prepare)."""
        return {"online": sorted(self.online), "target": self.target,
                CHANGED[self.event]: sorted(self.change())}


# The key of a notice's details that lists the vCPUs changing.
CHANGED = {SCALE_DOWN: "offline", SCALE_UP: "added"}


def plan(request: Request, online: frozenset, plugged: frozenset, rules: Policy) -> Plan:
    """The operation ``request`` asks for on a guest with ``online`` of ``plugged``
    vCPUs (raises ScaleError)."""
    wanted = target(request, online, Policy(rules.enabled, rules.minimum,
                                            min(rules.maximum, len(plugged))))
    return Plan(SCALE_DOWN if wanted < len(online) else SCALE_UP, online, plugged, wanted)


def after(event: str, online: frozenset, change: frozenset) -> frozenset:
    """The vCPUs online once ``change`` went offline (SCALE_DOWN) or came online."""
    return online - change if event == SCALE_DOWN else online | change


def cpu_set(value: object) -> frozenset | None:
    """A JSON list of vCPU numbers (the proxy's, the agent's and the CLI's requests and
    answers) as a set, or None if it is not one."""
    if not isinstance(value, list) or not all(
            isinstance(cpu, int) and not isinstance(cpu, bool) and 0 <= cpu < MAX_CPUS
            for cpu in value):
        return None
    return frozenset(value)


def named(voters: list) -> tuple:
    """The vCPUs the guest's applications offered to give up in their prepare answers,
    in the order the answer lists them (each list already checked by the protocol)."""
    return tuple(cpu for voter in voters for cpu in voter.get("offline") or ())


def closing_details(record: dict, end: bool) -> dict:
    """The details of a scale operation's end (the set online after, and what changed)
    or abort (those of its prepare), from its record."""
    details = dict(record.get("details") or {})
    if end and isinstance(record.get("after"), list):
        details.update(online=record["after"],
                       **{CHANGED.get(record.get("event"), "offline"): record.get("change")})
    return details


def outcome(record: dict, online: frozenset | None) -> tuple:
    """Whether an applied change happened, from the guest's own view ``online`` (None:
    not readable now): ``(True|False|None, why)``; None waits for a view."""
    if online is None:
        return None, "the guest's vCPUs cannot be read now"
    after = record.get("after")
    if not isinstance(after, list):
        return False, "its change was never applied (the agent had not begun it)"
    if frozenset(after) == online:
        return True, f"the guest shows vCPUs {cpu_list(online)} online, as planned"
    return False, (f"the guest shows vCPUs {cpu_list(online)} online, not the planned "
                   f"{cpu_list(after)}")


def cpu_list(cpus) -> str:
    """``cpus`` as a cpu list, as Linux and libvirt write them: ``{0, 1, 3}`` ->
    ``"0-1,3"`` (for messages and logs)."""
    ranges: list = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)
