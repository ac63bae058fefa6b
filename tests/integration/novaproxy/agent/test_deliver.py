"""Deliverer against real qemu-ga + guestd guests: the spool first, guest-exec behind it."""

import os
import time
import uuid

from guestd import protocol
from harness.guest import SPOOL_DIR, write_guestd_ctl
from novaproxy.agent import deliver, hypervisor

NO_CTL = ("/nonexistent/guestd-ctl",)  # any guest-exec of it fails: proof it was not used


def deliverer(guest, guestd_ctl, spool_dir=SPOOL_DIR, hv=None):
    """A Deliverer to ``guest``; ``hv``: the guests of another one (qemu-ga serves one
    connection at a time)."""
    hv = hv or hypervisor.QgaSocketDirectory(os.path.dirname(guest.qga_socket))
    return deliver.Deliverer(hv, guestd_ctl=guestd_ctl, host="h1", spool_dir=spool_dir)


def vote(guest, guestd_ctl, seconds=3.0, spool_dir=SPOOL_DIR, through=None):
    """A vote delivered to ``guest``, ``through`` a given Deliverer (and its memory)."""
    req = protocol.request(uuid.uuid4().hex, guest.instance, "reboot", "vote", seconds)
    through = through or deliverer(guest, guestd_ctl, spool_dir)
    started = time.monotonic()
    reply = through.deliver(req, seconds)
    assert (reply.id, reply.instance, reply.host) == (req["id"], guest.instance, "h1")
    return reply, time.monotonic() - started, req


def test_the_spool_answers_without_guest_exec(make_guest):
    guest = make_guest()
    guest.add_hook("veto", "#!/bin/sh\necho 'not now'\nexit 1\n")
    reply, took, req = vote(guest, NO_CTL)
    assert reply.outcome == "reject", reply
    assert reply.voters == [protocol.voter("veto", "reject", "not now")]
    assert took < 1.0
    # The answer file stays for guestd's sweep; the request file is gone.
    assert os.listdir(guest.spool_dir) == [req["id"] + protocol.ANS_SUFFIX]
    os.unlink(os.path.join(guest.hooks_dir, "veto"))
    assert vote(guest, NO_CTL)[0].outcome == "accept"


def test_no_spool_directory_falls_back_to_guest_exec_and_remembers(make_guest, short_dir):
    guest = make_guest()
    ctl = tuple(write_guestd_ctl(f"{short_dir}/guestd-ctl"))
    through = deliverer(guest, ctl, spool_dir="no-such-spool")
    reply, _, _ = vote(guest, ctl, through=through)
    assert reply.outcome == "accept", reply
    assert not through.memory.spool_on(guest.instance)  # guest-exec only for a while
    through.guestd_ctl = NO_CTL
    reply, _, _ = vote(guest, NO_CTL, through=through)
    assert reply.outcome == "not-negotiating", reply  # guest-exec of NO_CTL, no spool try
    spool_off = deliverer(guest, ctl, spool_dir="", hv=through.guests)
    assert vote(guest, ctl, through=spool_off)[0].outcome == "accept"  # guest-exec


def test_a_spool_nobody_takes_falls_back_within_the_deadline(make_guest, short_dir):
    """guestd stopped, its spool left behind: guestd-ctl's verdict, not a timeout."""
    guest = make_guest()
    guest.guestd.stop()
    ctl = tuple(write_guestd_ctl(f"{short_dir}/guestd-ctl"))
    reply, took, req = vote(guest, ctl, seconds=5.0)
    assert reply.outcome == "not-negotiating", reply
    assert deliver.SPOOL_PICKUP <= took < 5.0
    # The request was emptied: a guestd starting later drops it instead of acting on it.
    with open(os.path.join(guest.spool_dir, req["id"] + protocol.REQ_SUFFIX), "rb") as f:
        assert f.read() == b""


def test_a_request_qemu_ga_never_took_is_unreachable_not_silence(make_guest):
    """qemu-ga hung before the request: the guest was never asked, so the answer is
    unreachable (the policy's to decide), not a timeout the guest's silence would cover."""
    guest = make_guest()
    guest.hang()
    try:
        reply, took, _ = vote(guest, NO_CTL, seconds=1.5)
    finally:
        guest.unhang()
    assert reply.outcome == "unreachable" and "never reached the guest" in reply.detail, reply
    assert took < 1.5 + 0.2  # within its deadline (plus a loaded machine's scheduling)


def test_a_qemu_ga_restarting_when_asked_is_asked_once_it_is_back(make_guest):
    """qemu-ga killed just before the request (the harness restarts it in ~50 ms, as a
    guest's init would): the refused connection is tried again, and the guest answers."""
    import signal

    guest = make_guest()
    guest.add_hook("veto", "#!/bin/sh\necho 'not now'\nexit 1\n")
    through = deliverer(guest, NO_CTL)
    through.deliver(protocol.request("warm", guest.instance, "reboot", "vote", 2.0),
                    2.0)  # a connection to find broken
    guest.qemu_ga.signal(signal.SIGKILL)
    reply, took, _ = vote(guest, NO_CTL, seconds=3.0, through=through)
    assert reply.outcome == "reject" and reply.voters[0]["reason"] == "not now", reply
