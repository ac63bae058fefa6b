"""The README's server-group messaging limits are the code's.

The README states the limits and what happens at each; ``guestd/group_protocol.py``
and ``novaproxy/groups.py`` own them. These tests parse the README's table and compare
it with the constants, so that a change to one fails until the other follows.
"""

from __future__ import annotations

import os
import re

from guestd import group_protocol
from novaproxy import groups

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SECTION = "## Server-group messaging"
UNITS = {"KiB": 1024}
# The refusals the host decides, each of which the README explains.
REFUSALS = (groups.RATE_LIMITED, groups.NOT_IN_GROUP, groups.NOT_ENABLED,
            groups.GROUP_TOO_LARGE, groups.NOT_A_MEMBER, groups.PEER_GONE,
            groups.PEER_NOT_ENABLED)


def section() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def limits_table() -> dict:
    """limit names (a row may name several) -> the numbers of its value cell, in order."""
    rows = [line for line in section().splitlines() if line.startswith("| `")]
    table = {}
    for row in rows:
        names, value = [cell.strip() for cell in row.strip("|").split("|")][:2]
        numbers = [float(n) * UNITS.get(unit, 1)
                   for n, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(KiB)?", value)]
        table[tuple(re.findall(r"`(\w+)`", names))] = numbers
    return table


def constant(name: str) -> float:
    """A limit from the module that owns it."""
    owner = groups if hasattr(groups, name) else group_protocol
    return getattr(owner, name)


def test_every_limit_in_the_readme_has_the_codes_value():
    for names, numbers in limits_table().items():
        assert numbers == [constant(name) for name in names], names


def test_every_limit_of_the_code_is_in_the_readme():
    documented = {name for names in limits_table() for name in names}
    host_limits = {name for name, value in vars(groups).items()
                   if name.isupper() and not name.startswith("_")
                   and isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert documented == host_limits | {"MAX_BODY", "MAX_OUTBOX", "MAX_OUTBOX_BYTES"}


def test_every_refusal_and_guestd_error_is_explained():
    text = section()
    for reason in (*REFUSALS, group_protocol.TOO_LARGE, group_protocol.OUTBOX_FULL):
        assert f"`{reason}`" in text, reason
