"""Is this guest alive? One instance's monitoring state machine (pure).

Fed with what the agent observes (guest-ping answered or missed, guestd's
status file, libvirt lifecycle events, whether silence is expected right now)
and the clock, it says when a failure is declared and why, with the evidence.
It never acts: the agent confirms with Nova, claims the recovery in Redis and
carries it out, then reports back (:meth:`Monitor.recovering`,
:meth:`Monitor.left_alone`).

The mistakes it is built to avoid (the field's known ones): treating a user's
own stop, pause or migration as a failure (expected silence is ``quiet``, never
counted), recovering the same failure twice (``recovering`` until the guest
answers again), ignoring a VM that never answered (``never-answered`` is
reported after its grace period), and flapping (one answer does not undo a
failure being recovered; see :meth:`Monitor.answered`).

The state machine on one screen (``.``: no change; ``F:x``: ``failed``, and a
:class:`Failure` of cause ``x`` for the agent to recover)::

    state / input   answer   miss      app     crash    closed   quiet    active   deadline
    booting         healthy  .         .       F:crash  .        quiet    .        never-answered
                                                                                   or F:hung (1)
    healthy         .        suspect   F:app   F:crash  booting  quiet    .        F:stalled
    suspect         healthy  F:hung(2) F:app   F:crash  booting  quiet    .        F:stalled
    failed          .        .         .       .        .        quiet    .        .
    recovering      healthy  .         .       .        .        .        .        F:hung
    quiet           .        .         .       F:crash  .        quiet(3) booting  .
    never-answered  healthy  .         .       F:crash  .        quiet    .        .
    left-alone      healthy  .         .       .        .        quiet    .        .

Inputs: ``answer`` / ``miss`` a guest-ping answered or not (:meth:`~Monitor.answered`,
:meth:`~Monitor.missed`); ``app`` guestd's status names an application newly
unhealthy that asks for an action other than ``log`` (:meth:`~Monitor.status`);
``crash`` a fatal libvirt event (:meth:`~Monitor.crashed`); ``closed`` the guest
closed its agent channel (:meth:`~Monitor.restarting`); ``quiet`` / ``active``
silence expected, or no longer (:meth:`~Monitor.quiet`, :meth:`~Monitor.active`);
``deadline`` :meth:`~Monitor.tick`: the boot grace in ``booting``, the recovery
timeout in ``recovering``, guestd's status counter stalled in ``healthy`` and
``suspect`` (``F:stalled`` is cause ``guestd-stalled``). ``failed`` is left by
the recovery's verdict: :meth:`~Monitor.recovering`, :meth:`~Monitor.left_alone`,
or :meth:`~Monitor.quiet` when the silence was intended after all.

(1) ``F:hung`` if the guest has answered before (a restarted agent or a
migration's destination knows), else ``never-answered``, which is reported,
not recovered. (2) At the ``threshold``-th consecutive miss; before it
``suspect`` counts (with a threshold of 1, ``healthy`` fails at once).
(3) Only for a new reason; the same reason again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guestd import protocol
from novaproxy import flavor, operations

BOOTING, HEALTHY, SUSPECT, FAILED = "booting", "healthy", "suspect", "failed"
RECOVERING, QUIET, NEVER_ANSWERED, LEFT_ALONE = (
    "recovering", "quiet", "never-answered", "left-alone")
STATES = (BOOTING, HEALTHY, SUSPECT, FAILED, RECOVERING, QUIET, NEVER_ANSWERED, LEFT_ALONE)

# Recovery actions an operator may pick per flavor (guest:recovery).
REBOOT, STOP, MASAKARI, LOG = "reboot", "stop", "masakari", "log"
RECOVERIES = (REBOOT, STOP, MASAKARI, LOG)

# Causes of a declared failure (Masakari's event follows from them).
HUNG, CRASHED, APPLICATION, GUESTD_STALLED = "hung", "crashed", "application", "guestd-stalled"


@dataclass(frozen=True)
class Settings:
    """Per-instance monitoring settings: operator defaults, tightened by the flavor."""

    interval: float = 1.0  # seconds between guest-pings; a ping waits at most this long
    threshold: int = 3  # consecutive misses that declare a failure
    boot_grace: float = 300.0  # time for a (re)started guest to answer for the first time
    recovery: str = REBOOT
    recovery_timeout: float = 300.0  # a recovered guest must answer again within this


@dataclass(frozen=True)
class Transition:
    """A change of state worth a log line and an audit event."""

    old: str
    new: str
    why: str


@dataclass(frozen=True)
class Failure:
    """A declared failure: the agent confirms it and recovers with ``action``."""

    cause: str
    action: str
    why: str
    evidence: dict


@dataclass
class Monitor:
    instance: str
    settings: Settings
    now: float
    state: str = BOOTING
    since: float = 0.0  # when the current state began
    misses: int = 0
    first_miss: float | None = None
    last_answer: float | None = None  # monotonic time of the last answer
    answered_before: bool = False  # this VM has answered at least once (ever)
    quiet_reason: str = ""
    unhealthy: dict = field(default_factory=dict)  # app name -> (reason, action)
    status_seq: int | None = None
    status_advanced: float | None = None  # when guestd's counter last moved
    status_interval: float = 0.0

    def __post_init__(self) -> None:
        self.since = self.now

    # -- what the agent observed -------------------------------------------

    def answered(self, now: float) -> list:
        """guest-ping answered."""
        self.last_answer, self.misses, self.first_miss = now, 0, None
        self.answered_before = True
        if self.state in (BOOTING, SUSPECT, NEVER_ANSWERED, RECOVERING, LEFT_ALONE):
            # guestd's counter could not be read while the guest was silent: its stall
            # clock starts again from the next read, not from before the silence.
            self.status_seq = self.status_advanced = None
            why = {SUSPECT: "answered again", RECOVERING: "answered after the recovery",
                   LEFT_ALONE: "answered again"}.get(self.state, "first answer")
            return self._to(HEALTHY, now, why)
        return []

    def missed(self, now: float, detail: str) -> list:
        """guest-ping went unanswered for a whole interval."""
        if self.state not in (HEALTHY, SUSPECT):
            return []  # booting, quiet or already failed: silence is not news
        self.misses += 1
        self.first_miss = self.first_miss or now
        if self.misses < self.settings.threshold:
            return self._to(SUSPECT, now, f"{self.misses} missed ping(s): {detail}") \
                if self.state == HEALTHY else []
        evidence = {"missed_pings": self.misses, "last_error": detail,
                    "last_answer_ago": _ago(now, self.last_answer),
                    "silent_for": round(now - self.first_miss + self.settings.interval, 3)}
        return self._fail(now, HUNG, self.settings.recovery,
                          f"{self.misses} consecutive guest-pings unanswered ({detail})",
                          evidence)

    def status(self, now: float, status: dict) -> list:
        """guestd's status file, validated (:func:`guestd.protocol.parse_status`)."""
        if status["seq"] != self.status_seq:
            self.status_seq, self.status_advanced = status["seq"], now
        self.status_interval = status["interval"]
        out = []
        unhealthy = {app["name"]: (app["reason"], app["action"])
                     for app in status["apps"] if not app["healthy"]}
        # A corrective action is asked for once per unhealthy episode: the
        # application must report healthy (or go) before it can ask again.
        new = sorted(name for name in unhealthy
                     if unhealthy[name][1] != self.unhealthy.get(name, (None, None))[1])
        for name in new:
            reason, action = unhealthy[name]
            out.append(Transition(self.state, self.state, f"application {name} reports "
                                  f"unhealthy: {reason or 'no reason given'} "
                                  f"(asks for {action})"))
        for name in sorted(set(self.unhealthy) - set(unhealthy)):
            out.append(Transition(self.state, self.state, f"application {name} is healthy "
                                  "again"))
        self.unhealthy = unhealthy
        wanted = [name for name in new if unhealthy[name][1] != protocol.LOG_ONLY]
        if wanted and self.state in (HEALTHY, SUSPECT):
            name = wanted[0]
            reason, action = unhealthy[name]
            out += self._fail(now, APPLICATION, action,
                              f"application {name} is unhealthy and asks for {action}: "
                              f"{reason or 'no reason given'}",
                              {"application": name, "reason": reason})
        return out

    def crashed(self, now: float, event: str) -> list:
        """A libvirt lifecycle event that means the guest died or froze for good."""
        if self.state in (FAILED, RECOVERING, LEFT_ALONE):
            return []
        self.quiet_reason = ""
        return self._fail(now, CRASHED, self.settings.recovery, f"libvirt reports {event}",
                          {"libvirt_event": event, "last_answer_ago": _ago(now,
                                                                           self.last_answer)})

    def restarting(self, now: float, why: str) -> list:
        """The guest closed its agent channel: qemu-ga stopped, as it does when the
        guest shuts down or reboots itself (a hung guest cannot close it). Its silence
        until it answers again is a boot, given the boot grace, not a hang."""
        if self.state not in (HEALTHY, SUSPECT):
            return []
        self.misses, self.first_miss = 0, None
        self.status_seq = self.status_advanced = None
        return self._to(BOOTING, now, why)

    def quiet(self, now: float, reason: str) -> list:
        """Silence is expected from now on (paused, shut off, an operation in flight)."""
        if self.state == RECOVERING or (self.state == QUIET and reason == self.quiet_reason):
            return []  # our own recovery shows in Nova too: wait for its answer instead
        self.quiet_reason, self.misses, self.first_miss = reason, 0, None
        return self._to(QUIET, now, reason)

    def active(self, now: float) -> list:
        """Silence is no longer expected: the guest should answer again."""
        if self.state != QUIET:
            return []
        self.quiet_reason = ""
        self.status_seq = self.status_advanced = None
        return self._to(BOOTING, now, "expected to run again")

    def tick(self, now: float) -> list:
        """Deadlines: boot grace, recovery timeout, a guestd that stopped counting."""
        s = self.settings
        if self.state == BOOTING and now - self.since >= s.boot_grace:
            if not self.answered_before:
                return self._to(NEVER_ANSWERED, now, f"no answer from the guest agent within "
                                f"{s.boot_grace:.0f}s of start (is qemu-ga in the image?)")
            return self._fail(now, HUNG, s.recovery, f"no answer within {s.boot_grace:.0f}s "
                              "of start, though it has answered before",
                              {"boot_grace": s.boot_grace,
                               "last_answer_ago": _ago(now, self.last_answer)})
        if self.state == RECOVERING and now - self.since >= s.recovery_timeout:
            return self._fail(now, HUNG, s.recovery, f"no answer within "
                              f"{s.recovery_timeout:.0f}s of its recovery",
                              {"recovery_timeout": s.recovery_timeout})
        if self.state in (HEALTHY, SUSPECT) and self.status_advanced is not None:
            stall = s.threshold * max(s.interval, self.status_interval) + s.interval
            if now - self.status_advanced >= stall:
                seq = self.status_seq
                self.status_seq = self.status_advanced = None  # one declaration per stall
                return self._fail(now, GUESTD_STALLED, s.recovery,
                                  f"guestd's status counter stopped at {seq} for "
                                  f"{stall:.1f}s while the guest agent answers",
                                  {"status_seq": seq, "stalled_for": round(stall, 3)})
        return []

    # -- what the agent did about a failure ---------------------------------

    def recovering(self, now: float, why: str) -> list:
        self.misses, self.first_miss = 0, None
        return self._to(RECOVERING, now, why)

    def left_alone(self, now: float, why: str) -> list:
        """No recovery (rate limit reached): watch, report, do nothing until it answers."""
        return self._to(LEFT_ALONE, now, why)

    # -- internals ------------------------------------------------------------

    def _to(self, new: str, now: float, why: str) -> list:
        old, self.state, self.since = self.state, new, now
        return [Transition(old, new, why)]

    def _fail(self, now: float, cause: str, action: str, why: str, evidence: dict) -> list:
        return self._to(FAILED, now, why) + [Failure(cause, action, why, evidence)]


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(now - then, 3)


RUNNING = ("ACTIVE", "VERIFY_RESIZE")  # Nova statuses in which the guest should answer


def expected_silence(server: dict | None, host: str) -> str:
    """Why Nova's view of the server means its guest need not answer here ("" if it should)."""
    if server is None:
        return "Nova no longer knows the server"
    nova_host = server.get("OS-EXT-SRV-ATTR:host")
    if nova_host and nova_host != host:
        return f"Nova has it on {nova_host}"
    task = server.get("OS-EXT-STS:task_state")
    if task:
        return f"Nova is busy with it ({task})"
    status = server.get("status")
    if status not in RUNNING:
        return f"Nova reports it {status}"
    return ""


def operation_silence(ops: list) -> str:
    """Why the proxy's operation records mean silence is intended ("" if none): an
    operation sent to Nova and not closed yet. One still being negotiated (the guest
    votes and prepares, so it runs) or called off is no reason for silence."""
    sent = [op for op in ops or [] if _silences(op)]
    return f"{sent[-1].get('event')} in flight (recorded by the proxy)" if sent else ""


def _silences(op: dict) -> bool:
    """One operation record is a reason for silence. An operation the guest's agent
    carries out in the guest (vCPU scaling) is one only while it is being applied (a
    vCPU's stop_machine may hold qemu-ga up): the guest runs before and after, and one
    that hangs once the change is made must not go unwatched until the record closes,
    which needs the guest to hear its end notice."""
    state = op.get("state", operations.FORWARDED)
    if state in (operations.PREPARING, operations.REFUSED):
        return False
    lifecycle = operations.LIFECYCLES.get(op.get("event"))
    return lifecycle is None or not lifecycle.in_guest or state == operations.FORWARDING


def settings_from(defaults: Settings, extra_specs: dict) -> Settings | None:
    """The flavor's settings, or None when ``guest:monitoring`` does not turn it on.

    Invalid values fall back to the operator's defaults (the caller logs them),
    and a flavor may not make monitoring more aggressive than one ping per 0.2 s.
    """
    if not flavor.enabled(extra_specs, flavor.MONITORING):
        return None
    recovery = extra_specs.get(flavor.RECOVERY, defaults.recovery)
    return Settings(
        interval=flavor.number(extra_specs, flavor.MONITORING_INTERVAL, defaults.interval),
        threshold=int(flavor.number(extra_specs, flavor.MONITORING_THRESHOLD,
                                    defaults.threshold)),
        boot_grace=defaults.boot_grace,
        recovery=recovery if recovery in RECOVERIES else defaults.recovery,
        recovery_timeout=defaults.recovery_timeout,
    )


def invalid_specs(extra_specs: dict) -> list:
    """Monitoring extra specs the flavor sets but :func:`settings_from` ignores."""
    bad = []
    if extra_specs.get(flavor.RECOVERY, REBOOT) not in RECOVERIES:
        bad.append(f"{flavor.RECOVERY}={extra_specs[flavor.RECOVERY]!r} (one of "
                   f"{', '.join(RECOVERIES)})")
    for name in (flavor.MONITORING_INTERVAL, flavor.MONITORING_THRESHOLD):
        why = flavor.invalid_number(extra_specs, name)
        if why:
            bad.append(why)
    return bad
