"""The monitor's view of one instance, as the agent publishes it for operators.

One definition for its writer (the agent's :mod:`novaproxy.agent.watcher`) and
its readers (the ``novaproxy status`` command, a restarted agent or a
migration's destination asking whether the guest has answered before). Redis
keeps it as a hash of strings (:func:`novaproxy.redis_schema.publish_monitor`);
times in it are wall-clock seconds, so that any host can read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorView:
    state: str = "?"  # one of novaproxy.agent.monitor.STATES
    since: float | None = None  # when the state began
    last_answer: float | None = None  # the guest agent's last answer (None: never)
    answered: bool = False  # the guest has answered at least once, ever
    misses: int = 0  # consecutive missed pings
    host: str = ""  # the agent that publishes it
    interval: float = 0.0  # seconds between pings
    quiet: str = ""  # why silence is expected, in state quiet
    unhealthy: str = ""  # "app: reason; ..." for the applications that report unhealthy

    def fields(self) -> dict:
        """The hash's fields (strings), as published."""
        return {"state": self.state, "since": _stamp(self.since),
                "last_answer": _stamp(self.last_answer),
                "answered": "yes" if self.answered else "no", "misses": str(self.misses),
                "host": self.host, "interval": str(self.interval), "quiet": self.quiet,
                "unhealthy": self.unhealthy}

    @classmethod
    def from_fields(cls, fields: dict) -> MonitorView:
        """A published hash read back; a field missing or unreadable gets its default
        (an older agent's view, or none at all: ``{}``)."""
        return cls(state=fields.get("state", cls.state), since=_number(fields.get("since")),
                   last_answer=_number(fields.get("last_answer")),
                   answered=fields.get("answered") == "yes",
                   misses=int(_number(fields.get("misses")) or 0),
                   host=fields.get("host", ""),
                   interval=_number(fields.get("interval")) or 0.0,
                   quiet=fields.get("quiet", ""), unhealthy=fields.get("unhealthy", ""))


def _stamp(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _number(raw: str | None) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None
