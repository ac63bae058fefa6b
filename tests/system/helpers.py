"""What system tests read back from Nova (the audit trail: :mod:`harness.audit`)."""


def host_of(stack, server_id):
    return getattr(stack.nova(direct=True).servers.get(server_id), "OS-EXT-SRV-ATTR:host")

