"""Guarantee 1 against crafted URLs: no spelling of a lifecycle request reaches Nova unasked.

A negotiated server whose only application NACKs every vote; a generated set of
path spellings of its reboot, sent raw (byte for byte, no client normalising
them) through novaproxy-api to the real Nova API. Whatever the spelling, either
the guest was asked and said no (409 ``action-rejected``) or Nova did not act
(its instance actions show no reboot). The spellings Nova itself routes (measured
against nova-api directly, in this file too) must all have been asked about.
"""

import itertools
import json
import random
import uuid

import pytest

from guestd.client import Vote
from harness import raw_http
from harness.stack import ADMIN_TOKEN

pytestmark = pytest.mark.system

PROJECT = ADMIN_TOKEN.split(":")[1]  # the Nova fixture takes user:project from the token
BODY = json.dumps({"reboot": {"type": "SOFT"}}).encode()


def post_raw(base_url: str, path: str, body: bytes = BODY) -> tuple:
    return raw_http.request(base_url, "POST", path, body)


def encode_one(segment: str, index: int, upper: bool = True) -> str:
    """``segment`` with its character at ``index`` percent-encoded."""
    escape = f"%{ord(segment[index]):02X}" if upper else f"%{ord(segment[index]):02x}"
    return segment[:index] + escape + segment[index + 1:]


def spellings(sid: str, count: int = 60, seed: int = 9) -> list:
    """The issue's five, then a reproducible sample of the product of every variation:
    version prefix, project segment, separators (repeated, encoded), encoded characters
    in each segment, and endings."""
    fixed = [f"/v2.1//servers/{sid}/action", f"/v2.1/servers//{sid}/action",
             f"/v2.1/servers/{sid}//action", f"/v2.1/servers/{sid}%2Faction",
             f"/v2/servers/{sid}/action"]
    prefixes = ["/v2.1", "/v2", "//v2.1", "/v2.1/", f"/v2.1/{PROJECT}", f"/v2/{PROJECT}",
                "/v2%2E1", "/v2.1/.", "/v2.1/x/.."]
    separators = ["/", "//", "///", "%2F", "%2f", "/%2F"]
    servers = ["servers", encode_one("servers", 0), encode_one("servers", 6, upper=False),
               "%73%65%72%76%65%72%73", "SERVERS"]
    ids = [sid, encode_one(sid, 0), encode_one(sid, 8), sid.upper()]
    actions = ["action", encode_one("action", 0), "Action", "%61%63%74%69%6F%6E"]
    endings = ["", "/", "?x=1", "//", ";x", "%00", ".json"]
    product = list(itertools.product(prefixes, separators, servers, separators, ids,
                                     separators, actions, endings))
    sample = random.Random(seed).sample(product, count)
    return fixed + ["".join(parts) for parts in sample]


@pytest.fixture
def nacking_vm(stack, negotiated_flavor, recorder):
    server, _ = stack.boot("spellings", negotiated_flavor)
    rec = recorder(stack.guests[server.id], name="db",
                   verdict=lambda n: Vote.reject("spelling test says no"))
    return server.id, rec


def test_no_spelling_reaches_nova_unasked(stack, nacking_vm):
    sid, rec = nacking_vm
    asked, answers = 0, []
    for path in spellings(sid):
        status, body = post_raw(stack.proxy_url, path)
        answers.append((path, status))
        if status == 409:
            assert b"action-rejected" in body and b"spelling test says no" in body, path
            asked += 1
        assert "reboot" not in stack.instance_actions(sid), f"{path} rebooted the server unasked"
    # Every 409 was the guest's own NACK: one vote seen per rejection, nothing else.
    assert rec.seen == [("reboot", "vote")] * asked
    # The five all route in Nova (measured below): each was asked.
    assert all(status == 409 for _, status in answers[:5]), answers[:5]


def test_the_spellings_asked_about_are_the_ones_nova_routes(stack, negotiated_flavor,
                                                            plain_flavor, recorder):
    """Nova itself, without the proxy, on a server nobody negotiates: the spellings it
    acts on are exactly those the proxy put to the guest (no more: a guest is not asked
    about a request Nova would not route; no fewer: none slips past)."""
    plain, _ = stack.boot("spellings-direct", plain_flavor, with_guest=False)
    nova_routes = set()  # indices into spellings(): the same shapes for any server id
    for index, path in enumerate(spellings(plain.id)):
        stack.wait_for_server(plain.id, "ACTIVE")
        before = stack.instance_actions(plain.id).count("reboot")
        status, _ = post_raw(stack.nova_url, path)
        if status == 202:
            stack.wait_for_server(plain.id, "ACTIVE")
            assert stack.instance_actions(plain.id).count("reboot") == before + 1
            nova_routes.add(index)
    negotiated, _ = stack.boot("spellings-asked", negotiated_flavor)
    recorder(stack.guests[negotiated.id], name="db", verdict=lambda n: Vote.reject("no"))
    asked, refused = set(), set()
    shapes = spellings(negotiated.id)
    for index, path in enumerate(shapes):
        status, body = post_raw(stack.proxy_url, path)
        if status == 409:
            asked.add(index)
        elif status == 400 and b"Absolute URI" in body:
            refused.add(index)  # "//v2.1/...": cheroot answers 400 before any filter
    assert nova_routes - refused == asked, {
        "routed by Nova, never asked": [shapes[i] for i in sorted(nova_routes - refused - asked)],
        "asked, not routed by Nova": [shapes[i] for i in sorted(asked - nova_routes)]}
    assert len(asked) >= 5


def test_an_action_body_too_large_to_read_is_refused_not_forwarded(stack, nacking_vm):
    sid, rec = nacking_vm
    padded = BODY + b" " * (200 * 1024)  # under Nova's limit if an operator raised it
    status, body = post_raw(stack.proxy_url, f"/v2.1/servers/{sid}/action", padded)
    assert status == 413 and b"overLimit" in body
    assert "reboot" not in stack.instance_actions(sid)
    assert rec.seen == []


def test_utf8_and_non_utf8_paths_reach_nova_as_sent(stack, plain_flavor):
    """Nova's answers and what it stores are the same through the proxy as directly
    (Nova itself stores a UTF-8 tag decoded as latin-1, and fails a first PUT of a tag
    that is not UTF-8: the proxy must not "fix" either, nor fail on its own)."""
    direct, _ = stack.boot("tags-direct", plain_flavor, with_guest=False)
    proxied, _ = stack.boot("tags-proxied", plain_flavor, with_guest=False)
    nova = stack.nova(direct=True)

    def call(base: str, method: str, server_id: str, raw_tag: str) -> tuple:
        status, body = raw_http.request(base, method, f"/v2.1/servers/{server_id}/tags/{raw_tag}")
        return status, body.replace(server_id.encode(), b"ID")

    for method, tag in [("PUT", "caf%C3%A9"), ("PUT", "caf%E9"), ("PUT", "caf%E9"),
                        ("DELETE", "caf%E9"), ("DELETE", "caf%C3%A9")]:
        assert call(stack.proxy_url, method, proxied.id, tag) == \
            call(stack.nova_url, method, direct.id, tag), (method, tag)
        assert nova.servers.tag_list(proxied.id) == nova.servers.tag_list(direct.id)


def test_inside_novas_pipeline_no_spelling_reaches_nova_unasked(in_process, recorder):
    """In-process mode: the filter sits after Nova's own WSGI server and URL map, and the
    look-up goes to v2.1 even for a /v2 request (which Nova marks legacy in the environ)."""
    flavor = in_process.flavor(f"spellings-{uuid.uuid4().hex[:6]}", {"guest:negotiation": "true"})
    server, _ = in_process.boot("spellings-in-process", flavor)
    rec = recorder(in_process.guests[server.id], name="db",
                   verdict=lambda n: Vote.reject("spelling test says no"))
    answers = []
    for path in spellings(server.id, count=30):
        status, body = post_raw(in_process.proxy_url, path)
        answers.append((path, status))
        assert "reboot" not in in_process.instance_actions(server.id), f"{path} rebooted unasked"
    assert all(status == 409 for _, status in answers[:5]), answers[:5]
    assert rec.seen == [("reboot", "vote")] * sum(status == 409 for _, status in answers)
