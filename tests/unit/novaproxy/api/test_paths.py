import pytest

from novaproxy.api import paths

SID = "6f4bfe48-a5d9-477b-920f-ceb6538027e1"
ROUTED = f"/v2.1/servers/{SID}/action"


def environ(raw: str, path_info: str, script: str = "") -> dict:
    return {"SCRIPT_NAME": script, "PATH_INFO": path_info, "REQUEST_URI": raw}


@pytest.mark.parametrize("raw, path_info", [
    # What cheroot puts in PATH_INFO for each spelling Nova routes to the same action
    # (measured against nova-api: each of these rebooted the server).
    (f"/v2.1//servers/{SID}/action", f"/v2.1//servers/{SID}/action"),
    (f"/v2.1/servers//{SID}/action", f"/v2.1/servers//{SID}/action"),
    (f"/v2.1/servers/{SID}//action", f"/v2.1/servers/{SID}//action"),
    (f"/v2.1///servers/{SID}/action", f"/v2.1///servers/{SID}/action"),
    (f"//v2.1/servers/{SID}/action", f"//v2.1/servers/{SID}/action"),
    (f"/v2.1/servers/{SID}%2Faction", f"/v2.1/servers/{SID}%2Faction"),
    (f"/v2.1/servers/{SID}%2f/action", f"/v2.1/servers/{SID}%2f/action"),
    (f"/v2.1%2Fservers/{SID}/action", f"/v2.1%2Fservers/{SID}/action"),
    (f"/v2.1/%73ervers/{SID}/action", f"/v2.1/servers/{SID}/action"),
    (f"/v2.1/servers/{SID}/%61ction", f"/v2.1/servers/{SID}/action"),
])
def test_every_spelling_nova_routes_is_routed_the_same(raw, path_info):
    assert paths.routed_path(environ(raw, path_info)) == ROUTED


@pytest.mark.parametrize("raw", [
    f"/v2.1/%2573ervers/{SID}/action",  # decoded once, as Nova does: "%73ervers"
    f"/v2.1/servers/{SID}/action/",  # Nova: 404
    f"/v2.1/./servers/{SID}/action",  # Nova: 404
])
def test_spellings_nova_does_not_route_stay_apart(raw):
    assert paths.routed_path(environ(raw, paths.decoded(raw))) != ROUTED


def test_a_path_rewritten_by_middleware_is_taken_as_it_is():
    env = environ(f"/v2.1/servers/{SID}%2Faction", "/v2.1/servers/other//action")
    assert paths.routed_path(env) == "/v2.1/servers/other/action"


def test_inside_novas_pipeline_the_prefix_is_in_script_name():
    env = environ(f"/v2.1//servers/{SID}/action", f"//servers/{SID}/action", script="/v2.1")
    assert paths.routed_path(env) == f"/servers/{SID}/action"
    del env["REQUEST_URI"]
    assert paths.routed_path(env) == f"/servers/{SID}/action"


def test_non_utf8_and_utf8_paths_stay_native_strings():
    assert paths.routed_path(environ("/v2.1/servers/%E9", "/v2.1/servers/\xe9")) == \
        "/v2.1/servers/\xe9"
    assert paths.routed_path(environ("/v2.1/t/%C3%A9", "/v2.1/t/\xc3\xa9")) == "/v2.1/t/\xc3\xa9"


def test_an_encoded_slash_the_server_kept_upper_cased_is_still_the_clients_path():
    # cheroot keeps %2f but spells it %2F, and decodes every other escape.
    raw = f"/v2.1%2f%73ervers//{SID[:8]}%2D{SID[9:]}%2Faction"
    env = environ(raw, f"/v2.1%2Fservers//{SID}%2Faction")
    assert paths.client_path(env) == raw
    assert paths.routed_path(env) == ROUTED


def test_a_doubly_encoded_slash_stays_a_literal_in_the_server_id():
    raw = f"/v2.1/servers/{SID}%252Faction"
    env = environ(raw, f"/v2.1/servers/{SID}%2Faction")
    assert paths.routed_path(env) == f"/v2.1/servers/{SID}%2Faction"  # Nova: 404
