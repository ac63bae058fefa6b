from novaproxy.api import forward


def test_hop_by_hop_headers_are_dropped_including_those_named_by_connection():
    environ = {"HTTP_CONNECTION": "keep-alive, X-Secret-Hop", "HTTP_KEEP_ALIVE": "300",
               "HTTP_X_SECRET_HOP": "1", "HTTP_TE": "trailers", "HTTP_UPGRADE": "h2c",
               "HTTP_X_AUTH_TOKEN": "t", "HTTP_OPENSTACK_API_VERSION": "compute 2.96",
               "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "", "HTTP_HOST": "p:1"}
    assert forward.request_headers(environ) == {
        "X-Auth-Token": "t", "Openstack-Api-Version": "compute 2.96",
        "Content-Type": "application/json", "Host": "p:1"}


def test_target_prefers_the_raw_uri_while_it_names_the_request():
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/v2.1/servers/a b", "QUERY_STRING": "x=%2F",
               "REQUEST_URI": "/v2.1/servers/a%20b?x=%2F"}
    assert forward.request_target(environ) == "/v2.1/servers/a%20b?x=%2F"
    # A filter changed the path (a sub-request): the raw URI no longer applies.
    environ["PATH_INFO"] = "/v2.1/servers/other"
    assert forward.request_target(environ) == "/v2.1/servers/other?x=%2F"
    del environ["REQUEST_URI"]
    environ["PATH_INFO"] = "/v2.1/servers/a b"
    assert forward.request_target(environ) == "/v2.1/servers/a%20b?x=%2F"


def test_headers_left_as_none_by_middleware_are_not_forwarded():
    environ = {"HTTP_X_SERVICE_CATALOG": None, "HTTP_X_AUTH_TOKEN": "t"}
    assert forward.request_headers(environ) == {"X-Auth-Token": "t"}


def test_target_keeps_a_utf8_path_as_the_client_sent_it():
    # PEP 3333: PATH_INFO holds the path's bytes as latin-1 ("é" in UTF-8 is C3 A9).
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/v2.1/servers/s/tags/\xc3\xa9",
               "QUERY_STRING": "", "REQUEST_URI": "/v2.1/servers/s/tags/%C3%A9"}
    assert forward.request_target(environ) == "/v2.1/servers/s/tags/%C3%A9"
    del environ["REQUEST_URI"]  # quoted again from the bytes, not double-encoded
    assert forward.request_target(environ) == "/v2.1/servers/s/tags/%C3%A9"


def test_target_keeps_a_path_that_is_not_utf8():
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/v2.1/servers/\xe9", "QUERY_STRING": ""}
    assert forward.request_target(environ) == "/v2.1/servers/%E9"
    environ["REQUEST_URI"] = "/v2.1/servers/%e9"
    assert forward.request_target(environ) == "/v2.1/servers/%e9"


def test_target_keeps_an_encoded_slash_the_server_left_encoded():
    # cheroot leaves %2F in PATH_INFO; the raw URI still names the request.
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/v2.1/servers/a%2Fb", "QUERY_STRING": "",
               "REQUEST_URI": "/v2.1/servers/a%2Fb"}
    assert forward.request_target(environ) == "/v2.1/servers/a%2Fb"


def test_a_decoded_path_is_quoted_whole_percent_signs_included():
    """Without the raw URI, PATH_INFO is what the classifier read: a "%2F" in it is three
    characters, and must reach Nova as such, not as a slash Nova would route on."""
    environ = {"SCRIPT_NAME": "", "PATH_INFO": "/v2.1/servers/s%2Faction", "QUERY_STRING": ""}
    assert forward.request_target(environ) == "/v2.1/servers/s%252Faction"
