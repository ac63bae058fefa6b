"""A real Nova API for tests and the demo, served over HTTP on 127.0.0.1.

Nova's own functional-test fixtures (fake virt driver, sqlite, in-process
placement, stubbed Keystone) run the whole control plane in this process; the
compute API is then served by eventlet's WSGI server, so real clients
(python-novaclient, openstacksdk) and novaproxy talk HTTP to it.

Run: python -m harness.nova_api --port PORT [--computes compute1,compute2] [--api-paste FILE]
It prints one JSON line ``{"endpoint": ..., "computes": [...]}`` on stdout when
ready and serves until SIGTERM.
"""

import os

os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "False")

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402

import eventlet  # noqa: E402
import eventlet.wsgi  # noqa: E402
import fixtures  # noqa: E402
import nova.tests.functional  # noqa: E402,F401  (must be the first nova import)
from nova.tests import fixtures as nova_fixtures  # noqa: E402
from nova.tests.functional import integrated_helpers  # noqa: E402

PASTE_CONFIG = os.path.join(sysconfig.get_path("data"), "etc", "nova", "api-paste.ini")


def token_identity(app):
    """Map ``X-Auth-Token: user:project[:role,role]`` to the fixture's identity headers.

    The fixture stubs out Keystone and reads the caller from X-Auth-User,
    X-Auth-Project-Id and X-Roles; real clients only send a token, so the
    token carries the identity. User ``admin`` gets the admin role.
    """

    def middleware(environ, start_response):
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        if not token and environ.get("PATH_INFO", "/") in ("", "/"):
            return app(environ, start_response)  # the version document needs no token
        parts = token.split(":")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            body = b'{"error": {"code": 401, "message": "token must be user:project"}}'
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body)))])
            return [body]
        user, project = parts[0], parts[1]
        if len(parts) > 2:
            roles = parts[2]
        else:
            roles = "reader,member,admin" if user == "admin" else "reader,member"
        environ["HTTP_X_AUTH_USER"] = user
        environ["HTTP_X_AUTH_PROJECT_ID"] = project
        environ["HTTP_X_ROLES"] = roles
        return app(environ, start_response)

    return middleware


def keep_request_ids(plane) -> None:
    """Give Nova's request context the request id its API answers with, as in production.

    The fixture stubs keystonecontext with a context of its own making, which gets a
    fresh request id; the real one (``RequestContext.from_environ``) takes the id the
    request id middleware put in the environ and returns to the caller. Instance
    actions carry the context's id, and novaproxy matches them by it.
    """
    from nova.api import auth

    stub = auth.NovaKeystoneContext._create_context

    def create_context(env, **kwargs):
        return stub(env, request_id=env.get("openstack.request_id"),
                    global_request_id=env.get("openstack.global_request_id"), **kwargs)

    plane.useFixture(fixtures.MonkeyPatch(
        "nova.api.auth.NovaKeystoneContext._create_context", create_context))


class NovaControlPlane(integrated_helpers.ProviderUsageBaseTestCase):
    """Nova's functional test base, set up outside a test runner."""

    compute_driver = "fake.MediumFakeDriver"

    api_paste = PASTE_CONFIG

    def useFixture(self, fixture):
        # The wheel installs api-paste.ini under <venv>/etc/nova, not where
        # the fixture's default points.
        if isinstance(fixture, nova_fixtures.OSAPIFixture):
            self.flags(api_paste_config=self.api_paste, group="wsgi")
        return super().useFixture(fixture)

    def runTest(self):  # testtools wants a test method to exist
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--computes", default="compute1,compute2")
    parser.add_argument("--api-paste", default=PASTE_CONFIG,
                        help="nova's api-paste.ini, or one with novaproxy's filter inserted")
    args = parser.parse_args()

    NovaControlPlane.api_paste = os.path.abspath(args.api_paste)
    plane = NovaControlPlane()
    plane.setUp()
    keep_request_ids(plane)
    # Tests and the demo boot many servers; the default quota is 10 instances.
    plane.flags(instances=-1, cores=-1, ram=-1, group="quota")
    # Room for the benchmarks' 100+ servers of 1 vCPU and 512 MB on two fake hosts.
    plane.flags(initial_cpu_allocation_ratio=16.0, initial_ram_allocation_ratio=16.0)
    computes = [c for c in args.computes.split(",") if c]
    for host in computes:
        plane._start_compute(host)

    app = token_identity(plane.api_fixture.app())
    sock = eventlet.listen(("127.0.0.1", args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(json.dumps({"endpoint": f"http://127.0.0.1:{args.port}",
                      "computes": computes}), flush=True)
    try:
        eventlet.wsgi.server(sock, app, log=open(os.devnull, "w"), log_output=False)
    finally:
        plane.doCleanups()
    return 0


if __name__ == "__main__":
    sys.exit(main())
