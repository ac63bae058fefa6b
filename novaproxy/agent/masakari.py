"""Masakari notifications: the recovery that hands a failed VM to Masakari's engine.

The agent tells Masakari about a VM failure exactly as masakari-monitors do
(instancemonitor for libvirt lifecycle events, the introspective monitor for a
guest agent that stopped answering), so Masakari's recovery workflows treat it
the same way::

    POST <instance-ha endpoint>/notifications          (the endpoint ends in /v1[/<project>])
    {"notification": {"type": "VM", "hostname": <compute host as Masakari knows it>,
                      "generated_time": "2024-05-01T12:34:56.000000",
                      "payload": {"event": "QEMU_GUEST_AGENT_ERROR" | "LIFECYCLE",
                                  "instance_uuid": <uuid>,
                                  "vir_domain_event": "STOPPED_FAILED" | ...}}}

Masakari answers 202, or 409 when it already has the same notification (same
type, host and payload, still NEW or RUNNING, within its
``duplicate_notification_detection_interval``) or when the host is on
maintenance, 400 for a host it does not know, 403 without the right.

The ``[masakari]`` section takes the same keystoneauth1 options as ``[nova]``.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ks_exceptions
from requests import Response

from novaproxy.agent.nova import MESSAGE_LIMIT, adapter_from_section, fault_message

SERVICE_TYPE = "instance-ha"
# The request body above is the same from 1.0 to 1.2; 1.0 is Masakari's default.
MICROVERSION = "1.0"
# The ``event`` values masakari-monitors send for a VM.
QEMU_GUEST_AGENT_ERROR = "QEMU_GUEST_AGENT_ERROR"
LIFECYCLE = "LIFECYCLE"
STOPPED_FAILED = "STOPPED_FAILED"


@dataclasses.dataclass(frozen=True)
class NotifyResult:
    """What became of one notification, for the caller's log and audit.

    ``outcome``: ``delivered`` (Masakari took it), ``duplicate`` (Masakari already
    had it), ``refused`` (4xx: it will not act on it; asking again does not help) or
    ``unavailable`` (connection failures or 5xx until the attempts or the deadline
    ran out).
    """

    outcome: str
    attempts: int
    status: int | None = None  # the last HTTP status; None when Masakari was not reached
    message: str = ""  # Masakari's message, or why it could not be reached
    notification_uuid: str | None = None  # Masakari's id of a delivered notification

    @property
    def ok(self) -> bool:
        """Masakari has the notification (now or from before)."""
        return self.outcome in ("delivered", "duplicate")

    def __str__(self) -> str:
        detail = (f"HTTP {self.status}: " if self.status else "") + self.message
        if self.outcome == "delivered":
            return f"delivered as notification {self.notification_uuid}"
        if self.outcome == "duplicate":
            return f"duplicate: Masakari already has it ({detail})"
        if self.outcome == "refused":
            return f"refused by Masakari: {detail}"
        return f"Masakari unavailable after {self.attempts} attempt(s): {detail}"


def generated_time_of(moment: datetime) -> str:
    """ISO 8601 in UTC without a zone, as masakari-monitors send ``timeutils.utcnow()``
    (a naive ``moment`` is taken to be UTC already)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


class Masakari:
    """Notifications with bounded retries: at most ``attempts`` requests, waits
    doubling from ``backoff`` seconds, everything (waits and each request's
    timeout) inside ``deadline`` seconds per notification."""

    def __init__(self, api: adapter.Adapter, attempts: int = 5, backoff: float = 0.5,
                 deadline: float = 30.0) -> None:
        self.api = api
        self.attempts = attempts
        self.backoff = backoff
        self.deadline = deadline

    def notify(self, instance: str, hostname: str, event: str, vir_domain_event: str,
               generated_time: datetime) -> NotifyResult:
        """Tell Masakari that ``instance`` on ``hostname`` failed; never raises for
        Masakari's answers or absence, the result says what happened."""
        body = {"notification": {
            "type": "VM", "hostname": hostname,
            "generated_time": generated_time_of(generated_time),
            "payload": {"event": event, "instance_uuid": instance,
                        "vir_domain_event": vir_domain_event}}}
        deadline = time.monotonic() + self.deadline
        attempt = 0
        while True:
            attempt += 1
            timeout = deadline - time.monotonic()
            if self.api.session.timeout:
                timeout = min(timeout, self.api.session.timeout)
            try:
                resp = self.api.post("/notifications", json=body, raise_exc=False,
                                     timeout=timeout)
            except ks_exceptions.ClientException as exc:
                status, message = None, str(exc)[:MESSAGE_LIMIT]
            else:
                status = resp.status_code
                if status < 300:
                    return NotifyResult("delivered", attempt, status,
                                        notification_uuid=_notification_uuid(resp))
                message = fault_message(resp)
                if status == 409 and "maintenance" not in message:
                    return NotifyResult("duplicate", attempt, status, message)
                if status < 500:
                    return NotifyResult("refused", attempt, status, message)
            wait = self.backoff * 2 ** (attempt - 1)
            if attempt >= self.attempts or time.monotonic() + wait >= deadline:
                return NotifyResult("unavailable", attempt, status, message)
            time.sleep(wait)


def _notification_uuid(resp: Response) -> str | None:
    try:
        return resp.json()["notification"]["notification_uuid"]
    except (ValueError, TypeError, KeyError):
        return None  # taken, but the answer does not say as what


def from_section(section: dict) -> Masakari:
    """A Masakari client from the ``[masakari]`` options, or ConfigError saying what
    to fix."""
    return Masakari(adapter_from_section(section, "masakari", SERVICE_TYPE, MICROVERSION))
