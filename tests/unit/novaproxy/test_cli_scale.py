"""``novaproxy scale``'s pure parts: its command line, the action it sends, and the
lines it prints for the proxy's answers."""

import argparse
import json

import pytest

from novaproxy import cli_scale

SERVER = "5a1c0a7e-7f34-4c51-9d2e-0c1f3b7f0e11"


def parse(*argv):
    parser = argparse.ArgumentParser(prog="novaproxy")
    cli_scale.add_parser(parser.add_subparsers(dest="command"), list(argv))
    return parser.parse_args(list(argv))


def test_one_of_online_up_down_is_required_and_online_is_a_positive_count(capsys):
    assert parse("scale", SERVER, "--online", "3").online == 3
    assert parse("scale", SERVER, "--up").step == "up"
    assert parse("scale", SERVER, "--down").step == "down"
    for wrong in ([], ["--up", "--down"], ["--online", "2", "--up"], ["--online", "0"],
                  ["--online", "-1"], ["--online", "two"]):
        with pytest.raises(SystemExit) as exit:
            parse("scale", SERVER, *wrong)
        assert exit.value.code == 2, wrong
    assert "a whole number of vCPUs, at least 1: 'two'" in capsys.readouterr().err


def test_auth_comes_from_keystoneauth_options_password_by_default(monkeypatch):
    monkeypatch.delenv("OS_AUTH_TYPE", raising=False)
    monkeypatch.delenv("OS_INTERFACE", raising=False)
    args = parse("scale", SERVER, "--up")
    assert (args.os_auth_type, args.os_interface, args.endpoint) == ("password", "public", None)
    args = parse("scale", SERVER, "--up", "--os-auth-type", "admin_token", "--os-token", "t",
                 "--os-endpoint", "http://proxy/v2.1", "--endpoint", "http://other/v2.1",
                 "--os-interface", "internal")
    assert (args.os_token, args.os_endpoint, args.endpoint, args.os_interface) == (
        "t", "http://proxy/v2.1", "http://other/v2.1", "internal")
    assert parse("scale", SERVER, "--up", "--os-auth-type", "nonesuch").auth_error == (
        "no such keystoneauth1 auth type: nonesuch")


def test_the_action_body_is_the_contracts():
    assert cli_scale.action_body(2, None) == {"novaproxy-scale": {"online": 2}}
    assert cli_scale.action_body(None, "down") == {"novaproxy-scale": {"step": "down"}}


def result(**fields):
    body = {"online": [0, 1], "offline": [2, 3], "plugged": 4, "operation": "op-1"}
    return {"novaproxy-scale": {**body, **fields}}


def test_success_is_one_line_of_the_guests_view():
    line = cli_scale.format_result(SERVER, cli_scale.parse_result(result()))
    assert line == f"server {SERVER}: 2 of 4 vCPUs online (0-1); vCPUs 2-3 offline (operation op-1)"
    one = cli_scale.parse_result(result(online=[0, 1, 3], offline=[2]))
    assert cli_scale.format_result(SERVER, one).endswith(
        "3 of 4 vCPUs online (0-1,3); vCPU 2 offline (operation op-1)")
    every = cli_scale.parse_result(result(online=[0, 1, 2, 3], offline=[]))
    assert "4 of 4 vCPUs online (0-3); none offline" in cli_scale.format_result(SERVER, every)


@pytest.mark.parametrize("body", [None, [], {"other": {}}, {"novaproxy-scale": []},
                                  result(online="0-1"), result(offline=[2, "3"]),
                                  result(online=[True]), result(online=[-1]),
                                  result(plugged="4"), result(plugged=None)])
def test_a_200_that_is_not_a_result_says_the_change_may_have_happened(body):
    with pytest.raises(cli_scale.ScaleFailed, match="may have happened"):
        cli_scale.parse_result(body)


def test_errors_say_status_novas_message_and_for_409_the_proxys_result():
    bad = json.dumps({"badRequest": {"code": 400, "message": "1 vCPU(s) online is out of range"}})
    assert cli_scale.format_error(400, bad, None) == (
        "HTTP 400 badRequest: 1 vCPU(s) online is out of range")
    nack = json.dumps({"conflictingRequest": {"code": 409,
                                              "message": "action-rejected: db: busy"}})
    assert cli_scale.format_error(409, nack, "action-rejected") == (
        "HTTP 409 conflictingRequest: action-rejected: db: busy "
        "[OpenStack-Novaproxy-Result: action-rejected]")
    assert cli_scale.format_error(409, nack, None).endswith(
        "[OpenStack-Novaproxy-Result: none: a conflict of Nova or the proxy itself]")


def test_novas_own_unknown_action_says_the_endpoint_is_not_the_proxys():
    nova = json.dumps({"badRequest": {"code": 400,
                                      "message": "There is no such action: novaproxy-scale"}})
    assert cli_scale.format_error(400, nova, None) == (
        "HTTP 400 badRequest: There is no such action: novaproxy-scale (Nova answered, not "
        "the proxy: pass the proxy's endpoint with --endpoint)")


def test_control_characters_are_escaped_printable_text_kept():
    assert cli_scale.printable("a\x1b[2Jb\nc\u202ed é–") == r"a\x1b[2Jb\nc\u202ed é–"


def test_an_answer_that_is_not_novas_envelope_is_shown_truncated():
    assert cli_scale.format_error(502, "<html>Bad Gateway</html>\n", None) == (
        "HTTP 502 <html>Bad Gateway</html>")
    assert cli_scale.format_error(503, "", None) == "HTTP 503 (no body)"
    assert cli_scale.format_error(500, json.dumps({"a": 1, "b": 2}), None).startswith(
        'HTTP 500 {"a": 1')
    long = cli_scale.format_error(500, "x" * 5000, None)
    assert len(long) == len("HTTP 500 ") + cli_scale.MESSAGE_LIMIT


def test_a_uuid_is_used_as_it_is_anything_else_is_a_name():
    assert cli_scale.is_uuid(SERVER)
    assert cli_scale.is_uuid(SERVER.upper())
    for name in ("web-1", SERVER.replace("-", ""), "{" + SERVER + "}", ""):
        assert not cli_scale.is_uuid(name), name


def test_a_name_picks_exactly_one_server_named_so():
    listed = {"servers": [{"id": "b", "name": "web.1"}, {"id": "a", "name": "webx1"},
                          {"id": "c", "name": "twin"}, {"id": "d", "name": "twin"}]}
    assert cli_scale.pick_server("web.1", listed) == "b"
    with pytest.raises(cli_scale.UsageError, match="2 servers are named 'twin': pass the "
                                                   "UUID of one of c, d"):
        cli_scale.pick_server("twin", listed)
    with pytest.raises(cli_scale.UsageError, match="no server you can see is named 'web'"):
        cli_scale.pick_server("web", listed)
    with pytest.raises(cli_scale.ScaleFailed):
        cli_scale.pick_server("web", {"server": []})
