"""Negotiation policy from paste.ini: what is negotiated, how long, and what silence means.

Pure: :func:`from_conf` validates the filter's options once at start-up (a bad
value stops the proxy with a message that says which key and why), and
:func:`decide` turns a guest's reply into go or no-go.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from guestd import protocol, votes
from novaproxy import flavor, operations, replies
from novaproxy.api import classify

VOTE, NOTICE, OFF = "vote", "notice", "off"
MODES = (VOTE, NOTICE, OFF)

# Defaults from the field: a 10 s vote and a 10 s prepare. What the guest can
# veto is voted on; everything else is a notice: a prepare notice where the
# guest runs before Nova acts, an end notice where it runs after.
VOTED = ("stop", "reboot", "pause", "suspend", "resize", "migrate", "live-migrate", "shelve",
         "scale-down")
DEFAULT_MODES = {event: VOTE if event in VOTED else NOTICE for event in classify.EVENTS}
DEFAULT_VOTE_TIMEOUT = 10.0
DEFAULT_PREPARE_TIMEOUT = 10.0
DEFAULT_END_TIMEOUT = 15.0  # resume-class notices: the guest may still be settling
DEFAULT_OPERATION_TIMEOUT = 3600.0  # a recorded operation Nova never completes expires
MAX_TIMEOUT = flavor.MAX_VOTE_TIMEOUT  # of every timeout here, as of a flavor's vote timeout
# Seconds Nova has to record an action for a request whose answer the proxy never saw
# (Nova failed, or did not answer in time, or the proxy stopped): then, with no action
# of Nova's to show for it, the prepared guest is told abort.
DEFAULT_OUTCOME_WAIT = 60.0
# Longest any one Redis command of a negotiation may take (socket and connect
# timeouts, no retries): Redis answers in well under a millisecond when it is up.
DEFAULT_REDIS_TIMEOUT = 1.0
MAX_REDIS_TIMEOUT = 10.0


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Policy:
    redis_url: str
    modes: dict = field(default_factory=lambda: dict(DEFAULT_MODES))
    vote_timeout: float = DEFAULT_VOTE_TIMEOUT
    prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT
    end_timeout: float = DEFAULT_END_TIMEOUT
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT
    outcome_wait: float = DEFAULT_OUTCOME_WAIT
    silence: str = protocol.ACCEPT  # a guest application that does not answer in time
    unreachable: str = protocol.ACCEPT  # no route, no guest agent, Redis down, garbage
    redis_max_connections: int = 32
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT

    def mode(self, event: str) -> str:
        return self.modes.get(event, OFF)

    def vote_timeout_for(self, extra_specs: dict) -> float:
        """The flavor's ``guest:vote_timeout`` if valid, else the default."""
        return flavor.number(extra_specs, flavor.VOTE_TIMEOUT, self.vote_timeout)


def settings_known(server: dict) -> bool:
    """Nova showed the flavor's extra specs, so :func:`negotiates` can be trusted.

    They are missing where the caller's policy hides them
    (``os_compute_api:servers:show:flavor-extra-specs``): whether the server is
    negotiated is then unknown, which is the ``unreachable`` policy's to decide.
    """
    shown = server.get("flavor")
    return isinstance(shown, dict) and isinstance(shown.get("extra_specs"), dict)


def negotiates(server: dict) -> bool:
    """The flavor turns negotiation on; the server's metadata may opt out."""
    specs = (server.get("flavor") or {}).get("extra_specs") or {}
    if not flavor.enabled(specs, flavor.NEGOTIATION):
        return False
    return not flavor.opted_out(server.get("metadata") or {})


def monitored(server: dict) -> bool:
    """The agent monitors this VM: its operations are recorded so it knows silence
    is intended, even where the guest is not asked."""
    specs = (server.get("flavor") or {}).get("extra_specs") or {}
    return flavor.enabled(specs, flavor.MONITORING)


def _seconds(conf: dict, key: str, default: float, limit: float = MAX_TIMEOUT) -> float:
    raw = conf.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise PolicyError(f"{key} = {raw!r}: must be a number of seconds") from None
    if not 0 < value <= limit:
        raise PolicyError(f"{key} = {raw!r}: must be in (0, {limit:g}]")
    return value


def _choice(conf: dict, key: str, default: str, choices: tuple) -> str:
    value = str(conf.get(key, default)).strip()
    if value not in choices:
        raise PolicyError(f"{key} = {value!r}: must be one of {', '.join(choices)}")
    return value


def _modes(spec: str) -> dict:
    """``event:mode`` pairs, space or comma separated, over the defaults."""
    modes = dict(DEFAULT_MODES)
    for item in spec.replace(",", " ").split():
        event, _, mode = item.partition(":")
        if event not in classify.EVENTS:
            raise PolicyError(f"operations: unknown event {event!r}; known: "
                              + ", ".join(sorted(classify.EVENTS)))
        if mode not in MODES:
            raise PolicyError(f"operations: {item!r}: mode must be one of {', '.join(MODES)}")
        if mode == VOTE and not operations.LIFECYCLES[event].negotiable:
            raise PolicyError(f"operations: {item!r}: the guest is not running before "
                              f"{event}, so it cannot vote; use notice or off")
        modes[event] = mode
    return modes


def from_conf(conf: dict) -> Policy:
    redis_url = str(conf.get("redis_url", "")).strip()
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise PolicyError("redis_url: set it to a redis://, rediss:// or unix:// URL")
    return Policy(
        redis_url=redis_url,
        modes=_modes(str(conf.get("operations", ""))),
        vote_timeout=_seconds(conf, "vote_timeout", DEFAULT_VOTE_TIMEOUT),
        prepare_timeout=_seconds(conf, "prepare_timeout", DEFAULT_PREPARE_TIMEOUT),
        end_timeout=_seconds(conf, "end_timeout", DEFAULT_END_TIMEOUT),
        operation_timeout=_seconds(conf, "operation_timeout", DEFAULT_OPERATION_TIMEOUT,
                                   limit=7 * 86400),
        outcome_wait=_seconds(conf, "outcome_wait", DEFAULT_OUTCOME_WAIT),
        silence=_choice(conf, "silence", protocol.ACCEPT, (protocol.ACCEPT, protocol.REJECT)),
        unreachable=_choice(conf, "unreachable", protocol.ACCEPT,
                            (protocol.ACCEPT, protocol.REJECT)),
        redis_max_connections=_count(conf, "redis_max_connections", 32),
        redis_timeout=_seconds(conf, "redis_timeout", DEFAULT_REDIS_TIMEOUT,
                               limit=MAX_REDIS_TIMEOUT),
    )


def _count(conf: dict, key: str, default: int) -> int:
    raw = conf.get(key, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise PolicyError(f"{key} = {raw!r}: must be a whole number") from None
    if value < 2:
        raise PolicyError(f"{key} = {raw!r}: must be at least 2")
    return value


@dataclass(frozen=True)
class Decision:
    proceed: bool
    why: str  # for the log and the audit trail
    reasons: list = field(default_factory=list)  # for the caller, when rejected


def decide(policy: Policy, reply: replies.Reply) -> Decision:
    outcome = reply.outcome
    if outcome == protocol.ACCEPT:
        return Decision(True, "the guest accepted")
    if outcome == protocol.REJECT:
        return Decision(False, "the guest rejected", votes.reasons(reply.voters, policy.silence)
                        or ["rejected by the guest"])
    if outcome == protocol.NOT_NEGOTIATING:
        return Decision(True, "the guest does not negotiate")
    if outcome in (replies.TIMEOUT, replies.EXPIRED):
        why = f"the guest did not answer in time ({reply.detail or outcome})"
        return Decision(policy.silence == protocol.ACCEPT, why, [why])
    why = f"the guest could not be asked ({outcome}: {reply.detail})"
    return Decision(policy.unreachable == protocol.ACCEPT, why, [why])


def decide_prepare(policy: Policy, reply: replies.Reply) -> Decision:
    """After the prepare: go on to Nova, or stop (and abort) the operation.

    Applications cannot refuse a prepare; one that does not confirm in time is
    silence, a prepare that could not be delivered is ``unreachable``.
    """
    if reply.outcome in (protocol.ACCEPT, protocol.REJECT, protocol.NOT_NEGOTIATING):
        return Decision(True, "the guest is prepared")
    decision = decide(policy, reply)
    return dataclasses.replace(decision, why=f"prepare: {decision.why}")
