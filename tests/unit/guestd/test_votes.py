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


def test_ranked_lists_rejections_first_then_silence_that_rejects_then_the_rest():
    order = [A, T, R, E, A, R2]
    assert votes.ranked(order) == [R, R2, A, T, E, A]  # silence accepts: no rank of its own
    assert votes.ranked(order, silence="reject") == [R, R2, T, E, A, A]


def test_the_first_max_voters_ranked_decide_as_all_of_them_do():
    """However many accept, the cut an answer makes keeps the one NACK (and so its result)."""
    crowd = [protocol.voter(f"app{i}", "accept") for i in range(200)]
    for position in (0, 63, 64, 150, 200):
        voters = crowd[:position] + [R] + crowd[position:]
        listed = votes.ranked(voters)[:protocol.MAX_VOTERS]
        assert listed[0] == R and votes.tally(listed) == votes.tally(voters) == "reject"


def test_ranked_keeps_each_voters_picks():
    picked = protocol.voter("db", "accept", "", (3, 2))
    assert votes.ranked([picked, R]) == [R, {**A, "name": "db", "offline": [3, 2]}]
