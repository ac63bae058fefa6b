import json

import pytest

from novaproxy.api import classify

SID = "6f4bfe48-a5d9-477b-920f-ceb6538027e1"


def action(body, path=f"/v2.1/servers/{SID}/action"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify.classify("POST", path, raw)


@pytest.mark.parametrize("key, value, event, details", [
    ("os-stop", None, "stop", {}),
    ("os-start", None, "start", {}),
    ("reboot", {"type": "SOFT"}, "reboot", {"type": "SOFT"}),
    ("reboot", {"type": "hard"}, "reboot", {"type": "HARD"}),
    ("pause", None, "pause", {}),
    ("unpause", None, "unpause", {}),
    ("suspend", None, "suspend", {}),
    ("resume", None, "resume", {}),
    ("resize", {"flavorRef": "2"}, "resize", {"flavorRef": "2"}),
    ("confirmResize", None, "resize-confirm", {}),
    ("revertResize", None, "resize-revert", {}),
    ("migrate", {"host": "c2"}, "migrate", {"host": "c2"}),
    ("migrate", None, "migrate", {}),
    ("os-migrateLive", {"host": None, "block_migration": "auto"}, "live-migrate",
     {"block_migration": "auto"}),
    ("shelve", None, "shelve", {}),
    ("shelveOffload", None, "shelve-offload", {}),
    ("unshelve", None, "unshelve", {}),
    ("rebuild", {"imageRef": "img", "adminPass": "secret"}, "rebuild", {"imageRef": "img"}),
    ("evacuate", {"host": "c3"}, "evacuate", {"host": "c3"}),
    ("forceDelete", None, "delete", {}),
    ("restore", None, "restore", {}),
    ("trigger_crash_dump", None, "crash-dump", {}),
    ("rescue", {"adminPass": "x"}, "rescue", {}),
    ("unrescue", None, "unrescue", {}),
])
def test_every_lifecycle_action_is_classified(key, value, event, details):
    op = action({key: value})
    assert op == classify.Operation(SID, key, event, details)
    assert op.event in classify.EVENTS


@pytest.mark.parametrize("path", [
    f"/v2.1/servers/{SID}/action",
    f"/v2/6f4bfe48a5d9/servers/{SID}/action",
    f"/v2.1/project-1/servers/{SID}/action",
    f"/servers/{SID}/action",  # inside nova's pipeline: /v2.1 is in SCRIPT_NAME
    f"/project-1/servers/{SID}/action",
])
def test_url_forms(path):
    assert action({"os-stop": None}, path).instance == SID


@pytest.mark.parametrize("key", ["addSecurityGroup", "lock", "createImage",
                                 "os-getConsoleOutput", "changePassword", "createBackup"])
def test_passive_actions_are_not_ours(key):
    assert action({key: {}}) is None


@pytest.mark.parametrize("body", [
    b"", b"{", b"not json", b"[]", b'"reboot"', b"null", b"\xff\xfe",
    json.dumps({"reboot": {"type": "SOFT"}, "os-stop": None}).encode(),  # Nova: 400
    json.dumps({}).encode(),
    b" " * (classify.MAX_BODY + 1),
])
def test_malformed_bodies_pass_through(body):
    assert action(body) is None


def test_odd_but_valid_action_values_are_still_negotiated():
    # Nova validates the value; the guest is asked about what was asked.
    assert action({"reboot": "SOFT"}).details == {}
    assert action({"reboot": {"type": 3}}).details == {}


def test_delete_and_migration_endpoints():
    assert classify.classify("DELETE", f"/v2.1/servers/{SID}", None).event == "delete"
    abort = classify.classify("DELETE", f"/v2.1/servers/{SID}/migrations/7", None)
    assert (abort.event, abort.details) == ("live-migrate-abort", {"migration": "7"})
    complete = classify.classify("POST", f"/v2.1/servers/{SID}/migrations/7/action",
                                 b'{"force_complete": null}')
    assert complete.event == "live-migrate-complete"
    assert classify.classify("POST", f"/v2.1/servers/{SID}/migrations/7/action",
                             b'{"other": null}') is None


@pytest.mark.parametrize("method, path", [
    ("GET", f"/v2.1/servers/{SID}"),
    ("GET", f"/v2.1/servers/{SID}/action"),
    ("PUT", f"/v2.1/servers/{SID}"),
    ("POST", "/v2.1/servers"),
    ("DELETE", f"/v2.1/servers/{SID}/metadata/key"),
    ("DELETE", f"/v2.1/servers/{SID}/os-volume_attachments/v1"),
    ("POST", f"/v2.1/servers/{SID}/metadata"),
    ("POST", "/v2.1/flavors/1/action"),
    # Nova's router answers 404 to a trailing slash (measured): nothing to ask about.
    ("POST", f"/v2.1/servers/{SID}/action/"),
    ("DELETE", f"/v2.1/servers/{SID}/"),
])
def test_other_requests_are_not_ours(method, path):
    assert classify.classify(method, path, b'{"os-stop": null}') is None


def test_the_proxys_own_scale_action_is_classified_with_its_whole_body():
    body = {"novaproxy-scale": {"step": "down"}}
    op = action(body)
    assert (op.action, op.event, op.details) == ("novaproxy-scale", "novaproxy-scale",
                                                 {"body": body})
    assert op.event not in classify.EVENTS  # its event is known once the vCPUs are read
