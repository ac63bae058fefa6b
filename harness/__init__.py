"""The local stack on real components, shared by the demo, the tests and the benchmarks.

Nothing here is shipped: it starts real redis-server, qemu-ga, guestd, Nova
(its functional fixtures), novaproxy-agent and novaproxy-api processes on
127.0.0.1 and temporary unix sockets, and stops them by PID.
"""
