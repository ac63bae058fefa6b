"""novaproxy: negotiated lifecycle operations and guest monitoring for Nova VMs.

``novaproxy.api`` is the proxy in front of the Nova API, ``novaproxy.agent``
the daemon on each compute host; they meet only in Redis
(``novaproxy.redis_schema``). The guest side is the ``guestd`` package.
"""
