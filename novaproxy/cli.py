"""novaproxy: the operator's view of the system, read from Redis, and vCPU scaling.

    novaproxy status                 instances served, by host: monitor state and last
                                     answer, vCPUs last scaled to, operations not
                                     closed yet; negotiations in flight
    novaproxy operations [--open-longer-than S]
                                     every operation not closed yet, oldest first, and
                                     how long its prepare has been open; exits 1 if a
                                     prepare has been open longer than S seconds
    novaproxy events [-n N] [-f]     the audit trail, newest last; -f follows it
    novaproxy negotiations [-n N]    only negotiations and their outcome
    novaproxy groups                 the server groups in the membership cache
    novaproxy group SERVER_OR_GROUP [-n N]
                                     a group's members (host, Nova status, monitor
                                     state, messaging on or off) and its last N
                                     messages: sender, recipients, size and report,
                                     never the body; exits 1 if the group is unknown
    novaproxy scale SERVER (--online N | --up | --down) [--endpoint URL]
                                     bring a server's vCPUs online or offline through
                                     the compute API (the proxy's); exits 1 if refused

Redis is found with --redis-url, or NOVAPROXY_REDIS_URL. ``scale`` needs no Redis: it
authenticates like other OpenStack CLIs (--os-* options, OS_* variables; see
``novaproxy scale --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import redis

from novaproxy import audit, cli_groups, cli_scale, redis_schema
from novaproxy import operations as lifecycle
from novaproxy.monitor_view import MonitorView


def _when(fields: dict) -> str:
    try:
        stamp = float(fields.get("time", "0"))
    except ValueError:
        return "?"
    millis = int(stamp % 1 * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) + f".{millis:03d}"


def _voters(raw: str | None) -> str:
    try:
        voters = json.loads(raw or "[]")
    except ValueError:
        return ""
    return ", ".join(f"{v.get('name')}={v.get('vote')}" + (f" ({v['reason']})" if v.get("reason")
                                                          else "") for v in voters)


def format_event(fields: dict) -> str:
    kind = fields.get("kind", "?")
    head = f"{_when(fields)}  {kind:<12} {fields.get('instance', '?')}"
    # How long the guest took: as the agent saw it, or the proxy's whole round trip.
    outcome = fields.get("outcome", "?") + (f" in {fields['took_ms']} ms"
                                            if fields.get("took_ms") else "")
    if kind == audit.GUEST_ANSWER:
        body = f"{fields.get('event')} {fields.get('phase')} on {fields.get('host')}: {outcome}"
    elif fields.get("event") == fields.get("outcome"):  # a monitor state: said once
        body = f"{outcome} — {fields.get('why', '')}"
    else:
        body = f"{fields.get('event')}: {outcome} — {fields.get('why', '')}"
    voters = _voters(fields.get("voters"))
    detail = fields.get("detail")
    evidence = _evidence(fields.get("evidence"))
    return head + "  " + body + (f" [{voters}]" if voters else "") + (
        f" ({detail})" if detail else "") + (f" {{{evidence}}}" if evidence else "")


def _evidence(raw: str | None) -> str:
    """A failure's evidence (missed pings, last answer, libvirt event...) as key=value."""
    try:
        evidence = json.loads(raw or "{}")
    except ValueError:
        return ""
    if not isinstance(evidence, dict):
        return ""
    return ", ".join(f"{key}={value}" for key, value in evidence.items())


_STATES = {
    lifecycle.PREPARING: "being negotiated",
    lifecycle.FORWARDING: "on its way to Nova",
    lifecycle.FORWARDED: "accepted by Nova",
    lifecycle.UNKNOWN: "Nova's answer unknown",
    lifecycle.REFUSED: "called off, abort due",
}


def _operation(op: dict, now: float) -> str:
    """One operation record: what, how far it got, and what its guest is owed."""
    age = now - float(op.get("created", now))
    left = float(op.get("expires", now)) - now
    state = op.get("state", lifecycle.FORWARDED)
    text = (f"{op.get('event', '?')} ({op.get('action') or '-'}) {op.get('id', '?')}: "
            f"{_STATES.get(state, state)}, {age:.0f}s ago")
    if op.get("nova_request"):
        text += f", Nova request {op['nova_request']}"
    if op.get("why") and state in (lifecycle.UNKNOWN, lifecycle.REFUSED):
        text += f" ({op['why']})"
    if state == lifecycle.UNKNOWN:
        text += (f"; decided from Nova's instance actions within "
                 f"{max(float(op.get('decide_by', now)) - now, 0):.0f}s")
    if op.get("prepared"):
        text += f"; guest prepared, closing notice pending for {age:.0f}s"
    return text + f"; record expires in {max(left, 0):.0f}s"


def cmd_operations(client: redis.Redis, args) -> int:
    """Every record, oldest first; 1 if a prepare is open longer than allowed."""
    now = time.time()
    records = sorted(((op, instance) for instance, ops in
                      redis_schema.all_operations(client).items() for op in ops),
                     key=lambda pair: float(pair[0].get("created", now)))
    prepared = [op for op, _ in records if op.get("prepared")]
    oldest = max((now - float(op.get("created", now)) for op in prepared), default=0.0)
    print(f"operations not closed: {len(records)}; open prepares: {len(prepared)}"
          + (f" (oldest {oldest:.0f}s)" if prepared else ""))
    for op, instance in records:
        print(f"  {instance} {_operation(op, now)}")
    limit = args.open_longer_than
    if limit is not None and oldest > limit:
        print(f"a prepare has been open for {oldest:.0f}s, longer than {limit:g}s",
              file=sys.stderr)
        return 1
    return 0


def _monitor(view: MonitorView, now: float) -> str:
    """One monitored VM: its state, since when, why, and its last answer."""
    def ago(then: float | None) -> str:
        return "never" if then is None else f"{now - then:.1f}s ago"

    text = (f"monitor: {view.state} since {ago(view.since)}, "
            f"last answer {ago(view.last_answer)}")
    if view.quiet:
        text += f" — quiet: {view.quiet}"
    if view.unhealthy:
        text += f" — unhealthy: {view.unhealthy}"
    return text


def _vcpus(record: dict, now: float) -> str:
    """The vCPUs an instance was last scaled to, by which operation and when."""
    return (f"vCPUs: scaled to {record['online']} of {record['plugged']} online by operation "
            f"{record['operation']}, {max(now - record['time'], 0):.0f}s ago")


def cmd_status(client: redis.Redis, args) -> int:
    routes = redis_schema.all_routes(client)
    operations = redis_schema.all_operations(client)
    monitored = redis_schema.all_monitored(client)
    scaled = redis_schema.all_vcpus(client)
    now = time.time()
    by_host = defaultdict(list)
    for instance, host in routes.items():
        by_host[host].append(instance)
    if not by_host:
        print("no agent has published any instance (are the agents running?)")
    for host in sorted(by_host):
        print(f"{host}: {len(by_host[host])} instance(s)")
        for instance in sorted(by_host[host]):
            print(f"  {instance}")
            if instance in monitored:
                print(f"    {_monitor(MonitorView.from_fields(monitored[instance]), now)}")
            if instance in scaled:
                print(f"    {_vcpus(scaled[instance], now)}")
            for op in operations.get(instance, []):
                print(f"    operation {_operation(op, now)}")
    unrouted = sorted(set(operations) - set(routes))
    if unrouted:
        print(f"operations of instances no agent serves: {len(unrouted)}")
        for instance in unrouted:
            for op in operations[instance]:
                print(f"  {instance} {_operation(op, now)}")
    locks = redis_schema.all_locks(client)
    print(f"negotiations in flight: {len(locks)}")
    for instance, ttl in sorted(locks.items()):
        print(f"  {instance} (lock expires in {max(ttl, 0) / 1000:.1f}s)")
    return 0


def cmd_events(client: redis.Redis, args, kinds: tuple = ()) -> int:
    def show(entries) -> str | None:
        last = None
        for entry_id, fields in entries:
            last = entry_id
            if not kinds or fields.get("kind") in kinds:
                print(format_event(fields), flush=True)
        return last

    last = show(redis_schema.read_events(client, args.count)) or "0-0"
    while args.follow:
        last = show(redis_schema.read_events(client, 100, after=last, block_ms=1000)) or last
    return 0


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="novaproxy", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--redis-url", default=os.environ.get("NOVAPROXY_REDIS_URL"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="instances by host, negotiations in flight")
    ops = sub.add_parser("operations", help="operations not closed yet, open prepares")
    ops.add_argument("--open-longer-than", type=float, metavar="S",
                     help="exit 1 if a prepare has been open longer than S seconds")
    for name in ("events", "negotiations"):
        cmd = sub.add_parser(name, help="the audit trail" if name == "events"
                             else "negotiations and their outcome")
        cmd.add_argument("-n", "--count", type=int, default=50)
        cmd.add_argument("-f", "--follow", action="store_true")
    sub.add_parser("groups", help="the server groups in the membership cache")
    group = sub.add_parser("group", help="a group's members and recent messages")
    group.add_argument("name", metavar="SERVER_OR_GROUP",
                       help="a member's Nova UUID or the server group's id")
    group.add_argument("-n", "--count", type=int, default=20,
                       help=f"recent messages shown (at most {redis_schema.SENT_MAX} kept)")
    cli_scale.add_parser(sub, argv)
    args = parser.parse_args(argv)
    if args.command == "scale":
        return cli_scale.cmd_scale(args)
    if not args.redis_url:
        parser.error("say where Redis is: --redis-url URL or NOVAPROXY_REDIS_URL")
    client = redis_schema.connect(args.redis_url)
    try:
        if args.command == "status":
            return cmd_status(client, args)
        if args.command == "operations":
            return cmd_operations(client, args)
        if args.command == "groups":
            return cli_groups.cmd_groups(client, args)
        if args.command == "group":
            return cli_groups.cmd_group(client, args)
        kinds = (audit.NEGOTIATION,) if args.command == "negotiations" else ()
        return cmd_events(client, args, kinds)
    except redis.RedisError as exc:
        print(f"novaproxy: Redis at {redis_schema.redact(args.redis_url)}: {exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
