import pytest

from guestd import protocol, votes

A = protocol.voter("a", "accept")
R = protocol.voter("db", "reject", "replication in progress")
R2 = protocol.voter("lb", "reject", "")
T = protocol.voter("slow", "timeout")
E = protocol.voter("hook", "error", "exit status 3")


def test_nobody_to_ask_means_accept():
    assert votes.tally([]) == "accept"
    assert votes.tally([], silence="reject") == "accept"


def test_one_nack_rejects_and_every_reason_is_kept():
    assert votes.tally([A, R, A, R2]) == "reject"
    assert votes.reasons([A, R, A, R2]) == ["db: replication in progress", "lb: rejected"]


@pytest.mark.parametrize("silent", [T, E])
def test_silence_counts_as_the_policy_says(silent):
    assert votes.tally([A, silent], silence="accept") == "accept"
    assert votes.reasons([A, silent], silence="accept") == []
    assert votes.tally([A, silent], silence="reject") == "reject"
    assert votes.reasons([A, silent], silence="reject")[0].startswith(silent["name"])
