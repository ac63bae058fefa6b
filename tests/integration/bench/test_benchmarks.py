"""The benchmarks still run against the code as it is: a few rounds of each, as a module.

They are not in CI for their numbers (docs/benchmarks.md has those), but a change
of an API they use must not leave them broken until someone next measures.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def run(module: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.system
def test_negotiation_benchmark_runs():
    out = run("bench.negotiation", "--rounds", "20")
    assert "outcomes {'accept': 20}" in out
    assert "x the NACKed one's" in out


def test_concurrency_benchmark_runs():
    out = run("bench.concurrency", "--inflight", "60", "--answered", "10", "--timeout", "2")
    assert "{'answered:accept': 10, 'unanswered:unreachable': 50}" in out


@pytest.mark.system
def test_groups_benchmark_runs():
    out = run("bench.groups", "--messages", "5", "--vms", "4", "--groups", "2",
              "--cost-seconds", "2", "--rate", "1")
    assert "the last peer's on_message: p50=" in out
    assert "returned -> taken by the sender's agent" in out
    assert out.count("idle (messaging on, nothing sent) on compute") == 2
    assert out.count("sending 1 msg/s per VM on compute") == 2
    assert "host verdicts on every broadcast: {'accepted'" in out


@pytest.mark.system
def test_peer_notices_benchmark_runs():
    out = run("bench.peer_notices", "--failures", "1", "--operations", "1")
    assert out.count("event -> the last peer's on_peer") >= 2  # hangs, then reboots
    assert "[negotiated reboots through the proxy" in out
    assert "reached somebody" in out
