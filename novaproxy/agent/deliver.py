"""Deliver one request to a guest: ``guestd-ctl`` through qemu-ga, and the reply.

The guest is untrusted: its output is size-capped by the guest agent client,
must parse as an answer to this very request id and instance, and anything else
becomes an ``invalid`` reply that names what was wrong, never a vote.
"""

from __future__ import annotations

import json
import logging

from guestd import protocol
from novaproxy import redis_schema
from novaproxy.agent import guest_agent

LOG = logging.getLogger(__name__)
# Kept back from the proxy's deadline: the reply's way back through Redis.
RETURN_MARGIN = 0.2
# Kept back from the exec deadline: guestd-ctl's start and guest-exec polling.
EXEC_MARGIN = 0.3


def _does_not_negotiate(exc: guest_agent.CommandFailed) -> bool:
    """guestd-ctl is not installed, or the guest's qemu-ga blocks guest-exec."""
    return (exc.error_class == "CommandNotFound"
            or "Failed to execute child process" in exc.desc)


def budget(timeout: float, age: float) -> float:
    """Seconds the agent may spend on a request ``age`` seconds old."""
    return timeout - age - RETURN_MARGIN


def interpret(req: dict, exit_code: int, stdout: bytes, host: str) -> redis_schema.Reply:
    """The reply for what ``guestd-ctl`` printed (pure)."""
    def invalid(why: str) -> redis_schema.Reply:
        return redis_schema.Reply(req["id"], req["instance"], redis_schema.INVALID,
                                  detail=why, host=host)

    try:
        message = protocol.decode(stdout)
    except protocol.ProtocolError as exc:
        return invalid(f"guestd-ctl exited {exit_code}: {exc}")
    if message.get("type") == protocol.FAILURE:
        return invalid(f"guestd-ctl: {str(message.get('message'))[:protocol.MAX_REASON]}")
    try:
        answer = protocol.parse_answer(message, req["id"], req["instance"])
    except protocol.ProtocolError as exc:
        return invalid(str(exc))
    return redis_schema.Reply(req["id"], req["instance"], answer["result"],
                              voters=answer["voters"], host=host)


def deliver(hypervisor, guestd_ctl: tuple, req: dict, seconds: float,
            host: str) -> redis_schema.Reply:
    """Ask the guest; a reply within ``seconds``, whatever happens."""
    def reply(outcome: str, detail: str) -> redis_schema.Reply:
        return redis_schema.Reply(req["id"], req["instance"], outcome, detail=detail, host=host)

    if seconds <= EXEC_MARGIN:
        return reply(redis_schema.EXPIRED, f"only {seconds:.2f}s left when the agent got it")
    guest_timeout = round(seconds - EXEC_MARGIN, 3)
    guest_req = {**req, "timeout": guest_timeout}
    # --timeout lets guestd-ctl relay the request without parsing it (a faster start).
    argv = [*guestd_ctl, "--timeout", str(guest_timeout)]
    try:
        agent = hypervisor.agent(req["instance"])
        exit_code, stdout = guest_agent.guest_exec(
            agent, argv, json.dumps(guest_req).encode(), seconds)
    except guest_agent.GuestAgentTimeout as exc:
        return reply(redis_schema.TIMEOUT, str(exc))
    except guest_agent.GuestAgentUnavailable as exc:
        return reply(redis_schema.UNREACHABLE, str(exc))
    except guest_agent.CommandFailed as exc:
        if _does_not_negotiate(exc):
            return reply(protocol.NOT_NEGOTIATING, str(exc))
        return reply(redis_schema.UNREACHABLE, str(exc))
    except guest_agent.GuestAgentError as exc:
        return reply(redis_schema.INVALID, str(exc))
    return interpret(req, exit_code, stdout, host)
