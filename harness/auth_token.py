"""novaproxy's standalone pipeline behind the real keystonemiddleware ``auth_token``.

No Keystone runs here, so keystonemiddleware's own AuthTokenFixture stands in for
Keystone's token validation (it replaces fetch_token only); the middleware's header
stripping and identity handling are the real ones. Tokens are ``<user>:demo``, as the
Nova fixture reads them, with the roles of :data:`USERS`.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import webtest
from keystonemiddleware import auth_token
from keystonemiddleware.fixture import AuthTokenFixture

from novaproxy.api.server import load

USERS = {
    "admin": ["admin", "member", "reader"],
    "member": ["member", "reader"],
    "nova-agent": ["service", "member", "reader"],  # what a host agent's credentials carry
}


@contextlib.contextmanager
def behind_auth_token(stack, workdir: str):
    """A WebTest app: auth_token in front of ``stack``'s paste pipeline."""
    tokens = AuthTokenFixture()
    tokens.setUp()
    try:
        for user, roles in USERS.items():
            tokens.add_token_data(token_id=f"{user}:demo", user_id=user, project_id="demo",
                                  role_list=roles)
        path = os.path.join(workdir, f"paste-{uuid.uuid4().hex[:6]}.ini")
        stack.write_paste(path)
        app = auth_token.filter_factory({}, www_authenticate_uri="http://keystone.invalid",
                                        delay_auth_decision="false")(load(path))
        yield webtest.TestApp(app)
    finally:
        tokens.cleanUp()
