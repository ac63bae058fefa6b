"""The microversion Nova will serve a request at, read as nova.api.openstack.wsgi reads it.

Versions are ``(major, minor)`` tuples, so they compare as Nova's do;
:data:`LATEST` is above every version a rule can name.
"""

from __future__ import annotations

import re

# "latest": above every microversion a rule can name.
LATEST = (2, 1 << 30)
LEGACY_V2 = (2, 0)
_VERSION = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")
_LEGACY_PATH = re.compile(r"^/v2(?:/|$)")
_LEGACY_ENVIRON = "openstack.legacy_v2"  # nova.api.openstack.wsgi.ENV_LEGACY_V2


def requested_version(headers, path: str, environ: dict) -> tuple | None:
    """The microversion Nova will serve the request at, or None if it cannot be read.

    As nova.api.openstack.wsgi does: ``OpenStack-API-Version: compute X.Y``
    first, then ``X-OpenStack-Nova-API-Version``, else 2.1; the legacy /v2
    API ignores both and is 2.0.
    """
    if environ.get(_LEGACY_ENVIRON) or _LEGACY_PATH.match(path):
        return LEGACY_V2
    value = None
    for part in reversed((headers.get("OpenStack-API-Version") or "").split(",")):
        words = part.strip().split(None, 1)  # as microversion_parse reads it: last one wins
        if len(words) == 2 and words[0].lower() == "compute":
            value = words[1].strip()
            break
    if not value:
        legacy = headers.get("X-OpenStack-Nova-API-Version")
        value = legacy.split(",")[-1].strip() if legacy is not None else None
    if value is None:
        return (2, 1)
    if value == "latest":
        return LATEST
    match = _VERSION.match(value)
    return (int(match[1]), int(match[2])) if match else None


def text(version: tuple) -> str:
    """The version as Nova spells it."""
    return "latest" if version == LATEST else f"{version[0]}.{version[1]}"
