"""The request as the negotiation filter reads it."""

from __future__ import annotations

import webob

from novaproxy.api import classify


class NegotiationRequest(webob.Request):
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
