from novaproxy import flavor


def test_true_and_false_words_in_any_case():
    assert flavor.enabled({flavor.MONITORING: "ON"}, flavor.MONITORING)
    assert not flavor.enabled({flavor.MONITORING: "enabled"}, flavor.MONITORING)
    assert not flavor.enabled({}, flavor.MONITORING)
    assert flavor.opted_out({flavor.NEGOTIATION: "No"})
    assert not flavor.opted_out({flavor.NEGOTIATION: "maybe"})
    assert flavor.messaging_opted_out({flavor.GROUP_MESSAGING: "OFF"})
    assert not flavor.messaging_opted_out({flavor.NEGOTIATION: "false"})
    assert not flavor.opted_out({flavor.GROUP_MESSAGING: "false"})


def test_numbers_outside_their_range_fall_back_to_the_default():
    assert flavor.number({flavor.VOTE_TIMEOUT: "300"}, flavor.VOTE_TIMEOUT, 10.0) == 300.0
    assert flavor.number({flavor.VOTE_TIMEOUT: "0"}, flavor.VOTE_TIMEOUT, 10.0) == 10.0
    assert flavor.number({flavor.MONITORING_INTERVAL: "0.2"}, flavor.MONITORING_INTERVAL,
                         1.0) == 0.2
    assert flavor.number({}, flavor.MONITORING_THRESHOLD, 3) == 3
    assert flavor.invalid_number({flavor.MONITORING_THRESHOLD: "101"},
                                 flavor.MONITORING_THRESHOLD) == (
        "guest:monitoring_threshold='101' (a number from 1 to 100)")
    assert flavor.invalid_number({flavor.MONITORING_THRESHOLD: "100"},
                                 flavor.MONITORING_THRESHOLD) == ""
