from novaproxy.monitor_view import MonitorView


def test_fields_are_the_published_strings_and_read_back():
    view = MonitorView(state="quiet", since=1700000000.1234, last_answer=None, answered=True,
                       misses=2, host="compute1", interval=0.5, quiet="stop in flight",
                       unhealthy="db: stuck")
    fields = view.fields()
    assert fields == {"state": "quiet", "since": "1700000000.123", "last_answer": "",
                      "answered": "yes", "misses": "2", "host": "compute1", "interval": "0.5",
                      "quiet": "stop in flight", "unhealthy": "db: stuck"}
    assert MonitorView.from_fields(fields) == MonitorView(
        state="quiet", since=1700000000.123, last_answer=None, answered=True, misses=2,
        host="compute1", interval=0.5, quiet="stop in flight", unhealthy="db: stuck")


def test_a_missing_or_odd_view_reads_as_defaults():
    assert MonitorView.from_fields({}) == MonitorView()
    view = MonitorView.from_fields({"state": "healthy", "since": "x", "misses": ""})
    assert (view.state, view.since, view.misses, view.answered) == ("healthy", None, 0, False)
