"""The novaproxy API: a paste pipeline in front of (or inside) the Nova compute API.

``negotiation`` is the filter that asks the guest before an operation,
``forward`` the reverse proxy to Nova; ``etc/paste.ini`` composes them.
"""
