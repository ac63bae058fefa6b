"""The request as the negotiation filter reads it.

Identity comes only from objects that earlier middleware put in the environ
(keystonemiddleware's ``keystone.token_auth``, Nova's ``nova.context``), never
from headers: a client can send any header, but not a Python object.
"""

from __future__ import annotations

import webob

from novaproxy.api import classify

SKIP_HEADER = "X-Novaproxy-Skip-Negotiation"
SKIP_ENVIRON = "HTTP_X_NOVAPROXY_SKIP_NEGOTIATION"


class NegotiationRequest(webob.Request):
    def validated_identity(self) -> tuple:
        """``(is_admin, who)`` from a validated identity; ``(False, reason)`` without one."""
        context = self.environ.get("nova.context")
        if context is not None:  # inside nova-api's pipeline, after keystonecontext
            roles = set(getattr(context, "roles", None) or ())
            admin = bool(getattr(context, "is_admin", False)) or "admin" in roles
            return admin, f"user {context.user_id} project {context.project_id}"
        token = self.environ.get("keystone.token_auth")
        if token is not None and getattr(token, "has_user_token", False):
            user = token.user  # validated by keystonemiddleware's auth_token
            return "admin" in set(user.role_names or ()), \
                f"user {user.user_id} project {user.project_id}"
        return False, "no validated identity (no auth_token or nova context in front)"

    def operation(self) -> classify.Operation | None:
        """The lifecycle operation asked for, or None (also for any malformed request).

        The body is read at most once, kept seekable and handed on unchanged.
        """
        if self.method not in ("POST", "DELETE"):
            return None
        body = None
        if self.method == "POST":
            length = self.content_length
            if length is None and not self.is_body_readable:
                return None
            if length is not None and length > classify.MAX_BODY:
                return None
            self.make_body_seekable()
            body = self.body_file_seekable.read(classify.MAX_BODY + 1)
            self.body_file_seekable.seek(0)
        return classify.classify(self.method, self.path_info, body)

    def subrequest(self, path_info: str, microversion: str) -> webob.Request:
        """A GET of ``path_info`` as this caller: same credentials, same identity.

        The whole environ is copied (tokens, keystonemiddleware's and Nova's
        context), so the look-up is authorised exactly like the caller's own
        request would be, in front of Nova or inside its pipeline.
        """
        sub = self.copy_get()
        sub.path_info = path_info
        sub.query_string = ""
        sub.headers["OpenStack-API-Version"] = f"compute {microversion}"
        sub.headers["X-OpenStack-Nova-API-Version"] = microversion
        sub.headers["Accept"] = "application/json"
        return sub
