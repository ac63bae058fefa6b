"""guestd: the guest side of novaproxy (standard library only).

Applications in the VM register with the ``guestd`` daemon and vote on, or are
told about, lifecycle operations that the host asks about through
``guestd-ctl``.
"""
