"""Carrying out a declared failure: confirm, claim, act, and say so.

Never through a vote, and never on a hunch: before acting, the agent reads
the server from Nova afresh and the operation records from Redis, and backs
off if silence is expected after all (a user's own stop, a migration, another
host). Then it claims the recovery in Redis (one script: at most one under way
per VM, at most N per window), so two agents after a migration, or an agent
restarted mid-way, never recover the same failure twice.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from dataclasses import dataclass

import redis

from novaproxy import audit, redis_schema
from novaproxy.agent import masakari, monitor
from novaproxy.agent.config import MonitoringConfig
from novaproxy.agent.nova import NovaError, NovaUnavailable

LOG = logging.getLogger("novaproxy.agent.recovery")

# Masakari's VM notification events: a silent guest agent, or a dead domain.
MASAKARI_EVENTS = {monitor.HUNG: masakari.QEMU_GUEST_AGENT_ERROR,
                   monitor.GUESTD_STALLED: masakari.QEMU_GUEST_AGENT_ERROR,
                   monitor.APPLICATION: masakari.QEMU_GUEST_AGENT_ERROR,
                   monitor.CRASHED: masakari.LIFECYCLE}


ALREADY = "a recovery is already under way (claimed earlier, by this host or another)"
NOT_STARTED = "recovery not started (Redis unreachable)"


@dataclass(frozen=True)
class Outcome:
    """What became of a failure: the monitor's next state and why."""

    state: str  # monitor.QUIET, RECOVERING or LEFT_ALONE
    why: str

    def apply(self, m: monitor.Monitor, now: float) -> list:
        """Tell the failed VM's monitor (under its lock); its transitions."""
        if self.state == monitor.QUIET:
            return m.quiet(now, self.why)
        if self.state == monitor.LEFT_ALONE:
            return m.left_alone(now, self.why)
        return m.recovering(now, self.why)


class Recovery:
    def __init__(self, client, host: str, nova, masakari, config: MonitoringConfig) -> None:
        self.redis = client
        self.host = host
        self.nova = nova
        self.masakari = masakari
        self.config = config
        self._claims: dict = {}  # instance -> the token of the claim this agent holds
        self._claims_lock = threading.Lock()

    def handle(self, instance: str, failure: monitor.Failure) -> Outcome:
        """Confirm ``failure``, claim its recovery and carry it out."""
        try:
            outcome = self._handle(instance, failure)
            log = LOG.info if outcome.state == monitor.QUIET else LOG.warning
            log("instance %s: %s failure (%s): %s", instance, failure.cause, failure.why,
                outcome.why)
            redis_schema.audit(self.redis, audit.RECOVERY, instance, event=failure.cause,
                               action=failure.action, outcome=outcome.state, why=outcome.why,
                               detail=failure.why, evidence=failure.evidence, host=self.host)
        except (redis.RedisError, OSError) as exc:
            # Not carried out, or not said: the failure stands and is declared again.
            LOG.warning("instance %s: cannot recover now: %s", instance, exc)
            return Outcome(monitor.RECOVERING, NOT_STARTED)
        return outcome

    def answered(self, instance: str) -> None:
        """The guest answered again: the claim is released, a later failure is a new one.
        Kept if Redis does not take the release, for the next answer to try again."""
        with self._claims_lock:
            owner = self._claims.get(instance)
        if owner:
            redis_schema.release_recovery(self.redis, instance, owner)
            with self._claims_lock:
                if self._claims.get(instance) == owner:
                    del self._claims[instance]

    def _handle(self, instance: str, failure: monitor.Failure) -> Outcome:
        if redis_schema.recovery_under_way(self.redis, instance):
            return Outcome(monitor.RECOVERING, ALREADY)  # its own reboot keeps Nova busy
        try:
            server = self.nova.server(instance)
        except NovaUnavailable as exc:
            # Without Nova's word nothing is confirmed: wait, and decide again later.
            wait = self.config.defaults.recovery_timeout
            return Outcome(monitor.RECOVERING, f"not recovered: cannot confirm with Nova "
                           f"({exc}); trying again after {wait:.0f}s")
        silence = monitor.expected_silence(server, self.host)
        if not silence:
            silence = monitor.operation_silence(
                redis_schema.operations_of(self.redis, [instance]).get(instance, []))
        if silence:
            return Outcome(monitor.QUIET, f"not a failure after all: {silence}")
        if failure.action == monitor.LOG:
            return Outcome(monitor.LEFT_ALONE, "recovery is log only: left to the operator")
        owner = f"{self.host}:{uuid.uuid4().hex}"
        claim = redis_schema.claim_recovery(
            self.redis, instance, owner, hold=self.config.defaults.recovery_timeout,
            window=self.config.recovery_window, allowed=self.config.max_recoveries)
        if claim == redis_schema.ALREADY_CLAIMED:
            return Outcome(monitor.RECOVERING, ALREADY)
        if claim == redis_schema.RATE_LIMITED:
            return Outcome(monitor.LEFT_ALONE, f"left alone: {self.config.max_recoveries} "
                           f"recoveries within {self.config.recovery_window:.0f}s already; "
                           "an operator must look at it")
        with self._claims_lock:
            self._claims[instance] = owner
        return Outcome(monitor.RECOVERING, self._act(instance, failure))

    def _act(self, instance: str, failure: monitor.Failure) -> str:
        try:
            if failure.action == monitor.REBOOT:
                self.nova.reboot(instance, hard=True)
                return "Nova hard reboot requested"
            if failure.action == monitor.STOP:
                self.nova.stop(instance)
                return "Nova stop requested"
            if self.masakari is None:
                return "no Masakari configured ([masakari] section): nothing sent"
            result = self.masakari.notify(
                instance, self.host, MASAKARI_EVENTS[failure.cause], masakari.STOPPED_FAILED,
                datetime.datetime.now(datetime.timezone.utc))
            return f"Masakari notification: {result}"
        except NovaError as exc:  # refused or unreachable: said, and tried again later
            return (f"{failure.action} failed: {exc}; tried again if the guest has not "
                    f"answered within {self.config.defaults.recovery_timeout:.0f}s")
