"""The request as the negotiation filter reads it.

Identity comes only from objects that earlier middleware put in the environ
(keystonemiddleware's ``keystone.token_auth``, Nova's ``nova.context``), never
from headers: a client can send any header, but not a Python object.
"""

from __future__ import annotations

import webob

from novaproxy.api import classify, forward, paths

# The longest a server or flavor look-up may wait for Nova (standalone, through the
# forward app): the caller waits for it; past it, the unreachable policy decides.
LOOKUP_TIMEOUT = 10.0
# Set by Nova's legacy_v2_compatible filter (in-process mode, /v2 prefix): Nova then
# ignores microversions and shows no extra specs, so our look-ups must not carry it.
LEGACY_V2_ENVIRON = "openstack.legacy_v2"


class NegotiationRequest(webob.Request):
    def validated_identity(self) -> tuple:
        """``(roles, who)`` from a validated identity; ``(frozenset(), reason)`` without one.

        Nova's ``is_admin`` (an admin context) counts as the ``admin`` role.
        """
        context = self.environ.get("nova.context")
        if context is not None:  # inside nova-api's pipeline, after keystonecontext
            roles = {str(role).lower() for role in getattr(context, "roles", None) or ()}
            if getattr(context, "is_admin", False):
                roles.add("admin")
            return frozenset(roles), f"user {context.user_id} project {context.project_id}"
        token = self.environ.get("keystone.token_auth")
        if token is not None and getattr(token, "has_user_token", False):
            user = token.user  # validated by keystonemiddleware's auth_token
            roles = {str(role).lower() for role in user.role_names or ()}
            return frozenset(roles), f"user {user.user_id} project {user.project_id}"
        return frozenset(), "no validated identity (no auth_token or nova context in front)"

    def routed_path(self) -> str:
        """PATH_INFO as Nova's router will see it (a native string; see :mod:`paths`)."""
        return paths.routed_path(self.environ)

    def operation(self) -> classify.Operation | None:
        """The lifecycle operation asked for, or None (also for any malformed request).

        Read from the path Nova will route, never the spelling the client chose.
        The body is read at most once, kept seekable and handed on unchanged.
        Raises :class:`classify.BodyTooLarge` for an action whose body is too
        large to read: it is not forwarded unclassified.
        """
        if self.method not in ("POST", "DELETE"):
            return None
        path = self.routed_path()
        body = None
        if self.method == "POST":
            length = self.content_length
            if length is not None and length > classify.MAX_BODY:
                if classify.action_route(self.method, path):
                    raise classify.BodyTooLarge()
                return None
            if length is None and not self.is_body_readable:
                return None
            self.make_body_seekable()
            body = self.body_file_seekable.read(classify.MAX_BODY + 1)
            self.body_file_seekable.seek(0)
            if len(body) > classify.MAX_BODY and classify.action_route(self.method, path):
                raise classify.BodyTooLarge()
        return classify.classify(self.method, path, body)

    def route_as_classified(self) -> None:
        """Send the request on under the path it was classified by.

        Nova then acts on exactly what the guest was asked about, whatever the
        client's spelling; the forward app re-quotes a rewritten path.
        """
        routed = self.routed_path()
        if routed != self.environ.get("PATH_INFO"):
            self.environ["PATH_INFO"] = routed

    def subrequest(self, resource: str, microversion: str) -> webob.Request:
        """A GET of ``resource`` (e.g. ``servers/<id>``) as this caller: same credentials.

        The whole environ is copied (tokens, keystonemiddleware's and Nova's
        context), so the look-up is authorised exactly like the caller's own
        request would be, in front of Nova or inside its pipeline. It always goes
        to the v2.1 API, where microversions (and so extra specs) exist, whatever
        prefix the caller used: under /v2 Nova would show no extra specs.
        """
        routed = self.routed_path()
        prefix = routed[: routed.index("/servers/")]  # version and project, if any
        if prefix == "/v2" or prefix.startswith("/v2/"):
            prefix = "/v2.1" + prefix[len("/v2"):]
        sub = self.copy_get()
        sub.environ.pop(LEGACY_V2_ENVIRON, None)
        sub.environ[forward.TIMEOUT_ENVIRON] = LOOKUP_TIMEOUT
        sub.environ["PATH_INFO"] = f"{prefix}/{resource}"
        sub.environ.pop("REQUEST_URI", None)
        sub.environ.pop("RAW_URI", None)
        sub.query_string = ""
        sub.headers["OpenStack-API-Version"] = f"compute {microversion}"
        sub.headers["X-OpenStack-Nova-API-Version"] = microversion
        sub.headers["Accept"] = "application/json"
        return sub
