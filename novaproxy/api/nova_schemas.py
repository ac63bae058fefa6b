"""The request-body schemas Nova's own controllers carry, checked with Nova's validator.

Needs nova importable (in nova-api's pipeline, or a proxy installed beside
it); a body is checked at the microversion it is sent at, and anything this
Nova cannot know (a newer microversion, the legacy v2.0 API) is no verdict.
"""

from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace

from novaproxy.api import nova_rules
from novaproxy.api.microversion import LATEST, LEGACY_V2, text

LOG = logging.getLogger(__name__)

# Nova's controllers of /servers/{id}/action and /servers/{id}/migrations/{id}/action.
CONTROLLERS = (("servers", "ServersController"), ("migrate_server", "MigrateServerController"),
               ("pause_server", "PauseServerController"),
               ("suspend_server", "SuspendServerController"), ("shelve", "ShelveController"),
               ("evacuate", "EvacuateController"), ("deferred_delete", "DeferredDeleteController"),
               ("rescue", "RescueController"),
               ("server_migrations", "ServerMigrationsController"))


class NovaSchemas:
    """The request-body schemas Nova's controllers carry, by action, and Nova's validator."""

    def __init__(self) -> None:
        from nova import exception
        from nova.api.openstack import api_version_request
        from nova.api.validation import validators

        self._versions = api_version_request
        self._validator = validators._SchemaValidator  # what @validation.schema runs
        self._invalid = exception.ValidationError
        self._compiled: dict = {}  # id(schema) -> validator: building one costs ~3 ms
        self.by_action = {}
        for module, name in CONTROLLERS:
            controller = getattr(importlib.import_module(f"nova.api.openstack.compute.{module}"),
                                 name)
            for action, method in controller.wsgi_actions.items():
                if action in nova_rules.RULES:
                    self.by_action[action] = getattr(controller, method).request_body_schemas

    def refusal(self, action: str, body, version: tuple) -> str | None:
        schemas = self.by_action.get(action)
        if schemas is None or version == LEGACY_V2:  # v2.0's relaxed rules: not second-guessed
            return None
        newest = self._versions.max_api_version()
        if version == LATEST:
            requested = newest
        else:
            requested = self._versions.APIVersionRequest(text(version))
            if requested > newest:  # a newer Nova than ours: its schema is unknown here
                return None
        schema = schemas(SimpleNamespace(api_version_request=requested))
        if schema is None:
            return None
        validator = self._compiled.get(id(schema))
        if validator is None:  # Nova's schemas are module constants: ids stay theirs
            validator = self._compiled[id(schema)] = self._validator(schema, False, True)
        try:
            validator.validate(body)
        except self._invalid as exc:
            return exc.format_message()
        except Exception as exc:  # a validator problem is no verdict on the request
            LOG.warning("%s body could not be validated: %s", action, exc)
        return None
