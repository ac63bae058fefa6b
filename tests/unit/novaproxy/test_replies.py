from novaproxy import replies


def test_reply_round_trip_ignores_unknown_fields():
    reply = replies.Reply("r", "i", "accept", [{"name": "a"}], "", "c1")
    fields = reply.fields()
    assert replies.Reply.from_fields(fields) == reply
    newer = {"reply": fields["reply"][:-1] + ', "extra": 1}'}
    assert replies.Reply.from_fields(newer) == reply
