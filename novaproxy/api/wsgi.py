"""WSGI entry point for uwsgi, gunicorn or mod_wsgi.

    gunicorn --threads 64 'novaproxy.api.wsgi:application'

Serves the pipeline ``main`` of the file named by ``NOVAPROXY_PASTE``
(default ``/etc/novaproxy/paste.ini``).
"""

import os

from novaproxy.api.server import load

application = load(os.environ.get("NOVAPROXY_PASTE", "/etc/novaproxy/paste.ini"))
