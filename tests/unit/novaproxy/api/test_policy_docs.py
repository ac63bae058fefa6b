"""The README's policy section and etc/paste.ini say what novaproxy.api.policy does.

Both drifted once (shelve-offload documented as voted, start/unpause/resume as
off, two accepted keys undocumented); these tests parse the documents and
compare them with the code, so that a change to one fails until the other follows.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re

from novaproxy import operations
from novaproxy.api import policy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
SECTION = "### paste.ini policy keys (`[filter:negotiation]`)"
YES_NO = {"yes": True, "no": False}


def policy_section() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find("\n## ", start)
    return text[start:end if end >= 0 else None]


def tables(text: str) -> list[list[dict]]:
    """Every markdown table in ``text``: a list of rows, each a dict by header."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            header, rows = block[0], block[2:]  # block[1] is the |---| line
            found.append([dict(zip(header, row, strict=True)) for row in rows])
            block = []
    return found


def table_with(column: str) -> list[dict]:
    (table,) = [t for t in tables(policy_section()) if t and column in t[0]]
    return table


def code(cell: str) -> str:
    """`stop` -> stop"""
    return cell.strip("`")


def same(written: str, default: str) -> bool:
    """Equal as numbers where both are numbers (10 and 10.0), else as text."""
    try:
        return float(written) == float(default)
    except ValueError:
        return written == default


def documented_keys() -> dict[str, str]:
    return {code(row["key"]): row["default"] for row in table_with("key")}


def test_the_event_table_gives_every_events_default_mode():
    rows = table_with("event")
    documented = {code(row["event"]): code(row["default mode"]) for row in rows}
    assert len(documented) == len(rows)  # no event twice
    assert documented == policy.DEFAULT_MODES


def test_the_event_table_says_which_events_can_be_voted_on_and_end_without_a_prepare():
    rows = table_with("event")
    assert {code(r["event"]): YES_NO[r["guest runs before"]] for r in rows} == {
        event: lifecycle.negotiable for event, lifecycle in operations.LIFECYCLES.items()}
    assert {code(r["event"]): YES_NO[r["end without a prepare"]] for r in rows} == {
        event: lifecycle.end for event, lifecycle in operations.LIFECYCLES.items()}


def test_every_key_the_policy_accepts_is_documented_with_its_default():
    fields = {f.name for f in dataclasses.fields(policy.Policy)}
    keys = documented_keys()
    assert set(keys) == (fields - {"modes"}) | {"operations"}
    defaults = policy.from_conf({"redis_url": "redis://127.0.0.1:6379/0"})
    for key, default in keys.items():
        if key in ("redis_url", "operations"):
            continue
        assert same(str(getattr(defaults, key)), default), key


def test_the_voter_limit_in_the_readme_is_the_protocols():
    from guestd import protocol

    limit = re.search(r"at most (\d+)\s+voters", policy_section())
    assert limit and int(limit[1]) == protocol.MAX_VOTERS


def test_etc_paste_ini_names_every_key_with_the_documented_default():
    with open(os.path.join(REPO, "etc", "paste.ini")) as f:
        text = f.read()
    # A key is either set or shown commented out, as "# key = value".
    settings = dict(re.findall(r"^#? ?(\w+) = (.*)$", text, re.MULTILINE))
    for key, default in documented_keys().items():
        assert key in settings, f"etc/paste.ini does not mention {key}"
        if key not in ("redis_url", "operations"):
            assert same(settings[key], default), key
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    voted, noticed = re.search(r"vote for ([a-z -]+); notice for ([a-z -]+)\.", comments).groups()
    assert {**dict.fromkeys(voted.split(), policy.VOTE),
            **dict.fromkeys(noticed.split(), policy.NOTICE)} == policy.DEFAULT_MODES
    # The shipped operations are the defaults spelled out, not another policy.
    paste = configparser.ConfigParser(interpolation=None)
    paste.read_string(text)
    operations_line = paste["filter:negotiation"].get("operations", "")
    assert policy.from_conf({"redis_url": "redis://x", "operations": operations_line}).modes \
        == policy.DEFAULT_MODES
