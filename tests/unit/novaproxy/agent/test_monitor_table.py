"""The state × input table in monitor.py's docstring says what the code does, cell by cell."""

import re

import pytest

from novaproxy.agent import monitor
from novaproxy.agent.monitor import Failure, Monitor, Settings

SETTINGS = Settings(interval=1.0, threshold=3, boot_grace=30.0, recovery_timeout=60.0)
CAUSES = {"crash": monitor.CRASHED, "app": monitor.APPLICATION, "hung": monitor.HUNG,
          "stalled": monitor.GUESTD_STALLED}
UNHEALTHY = {"seq": 7, "interval": 1.0,
             "apps": [{"name": "db", "healthy": False, "reason": "stuck", "action": "reboot"}]}
INPUTS = {
    "answer": lambda m: m.answered(10.0),
    "miss": lambda m: m.missed(10.0, "timeout"),
    "app": lambda m: m.status(10.0, UNHEALTHY),
    "crash": lambda m: m.crashed(10.0, "STOPPED_CRASHED"),
    "closed": lambda m: m.restarting(10.0, "the guest agent disconnected"),
    "quiet": lambda m: m.quiet(10.0, "a new reason"),
    "active": lambda m: m.active(10.0),
    "deadline": lambda m: m.tick(1000.0),
}


def table() -> list:
    """(state, input, cell) for every cell of the table's first lines."""
    lines = monitor.__doc__.split("::\n\n", 1)[1].splitlines()
    header = lines[0].split()[3:]
    cells = []
    for line in lines[1:]:
        if not line.strip():
            break
        words = line.split()
        if words[0] in monitor.STATES:
            cells += [(words[0], name, cell) for name, cell in zip(header, words[1:])]
    return cells


def in_state(state: str) -> Monitor:
    """A monitor in ``state`` as the agent drives it there, with its deadlines armed."""
    m = Monitor("u-1", SETTINGS, now=0.0)
    m.state, m.since = state, 0.0
    if state == monitor.SUSPECT:
        m.misses, m.first_miss = SETTINGS.threshold - 1, 0.0
    if state in (monitor.HEALTHY, monitor.SUSPECT):
        m.status_seq, m.status_advanced = 1, 0.0
    if state == monitor.QUIET:
        m.quiet_reason = "an old reason"
    return m


def test_the_table_covers_every_state_and_input():
    cells = table()
    assert {state for state, _, _ in cells} == set(monitor.STATES)
    assert {name for _, name, _ in cells} == set(INPUTS)
    assert len(cells) == len(monitor.STATES) * len(INPUTS)


@pytest.mark.parametrize("state,name,cell", table())
def test_each_cell(state, name, cell):
    m = in_state(state)
    out = INPUTS[name](m)
    cell = re.sub(r"\(\d\)$", "", cell)
    failures = [o for o in out if isinstance(o, Failure)]
    if cell == ".":
        assert (m.state, failures) == (state, [])
    elif cell.startswith("F:"):
        assert m.state == monitor.FAILED
        assert [f.cause for f in failures] == [CAUSES[cell[2:]]]
    else:
        assert (m.state, failures) == (cell, [])
