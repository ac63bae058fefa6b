"""What Nova 34 checks before it acts on a lifecycle operation: facts, tabulated.

Pure data, keyed by :class:`novaproxy.api.classify.Operation` ``action``:
which policy rule each action is authorised by (nova/policies/*.py, checked
in nova/api/openstack/compute/*.py with the target built there), which
microversion introduced it, and which vm/task states nova/compute/api.py's
``check_instance_state`` / ``check_instance_lock`` decorators let through.
tests/integration/novaproxy/api/test_precheck.py compares every entry with
Nova's own code, so a Nova upgrade that changes one fails there.
"""

from __future__ import annotations

from dataclasses import dataclass

ANY = None  # no check on this attribute

# Nova's policy targets: {'project_id': ...} or {'user_id': ..., 'project_id': ...}.
PROJECT = "project"
OWNER = "owner"

_SERVERS = "os_compute_api:servers:%s"
_MIGRATE = "os_compute_api:os-migrate-server:%s"
_SHELVE = "os_compute_api:os-shelve:%s"

# nova/compute/vm_states.py and task_states.py values.
ACTIVE, BUILDING, DELETED, ERROR = "active", "building", "deleted", "error"
PAUSED, RESCUED, RESIZED, SHELVED = "paused", "rescued", "resized", "shelved"
SHELVED_OFFLOADED, SOFT_DELETED = "shelved_offloaded", "soft-delete"
STOPPED, SUSPENDED = "stopped", "suspended"
MIGRATING = "migrating"
SOFT_REBOOTING = frozenset({"rebooting", "reboot_pending", "reboot_started"})
HARD_REBOOTING = frozenset({"rebooting_hard", "reboot_pending_hard", "reboot_started_hard"})
REBUILDING = frozenset({"rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"})
RESIZING = frozenset({"resize_prep", "resize_migrating", "resize_migrated", "resize_finish"})
# task_states.ALLOW_REBOOT: a hard reboot may interrupt these.
ALLOW_HARD_REBOOT_TASKS = frozenset({None, "rebooting", "reboot_pending", "reboot_started",
                                     "resuming", "rebooting_hard", "unpausing", "pausing",
                                     "suspending"})
IDLE = frozenset({None})  # check_instance_state's default: no task under way


@dataclass(frozen=True)
class States:
    """One ``check_instance_state`` (+ ``check_instance_lock``) of nova/compute/api.py."""

    vm: frozenset | None  # allowed vm_state, ANY for no check
    task: frozenset | None = IDLE  # allowed task_state, ANY for no check
    launched: bool = True  # must_have_launched: launched_at must be set
    lock: bool = True  # a locked server is refused to non-admins


@dataclass(frozen=True)
class Rule:
    """The policy rule Nova's controller checks for the action, and its target."""

    action: str  # the action (Operation.action)
    rule: str  # policy name
    target: str = OWNER  # PROJECT or OWNER
    host_rule: str | None = None  # checked instead when the body names a host
    host_since: tuple = (2, 0)  # microversion from which the host is read
    extra_host_rule: str | None = None  # checked as well when a host is named
    since: tuple | None = None  # microversion that introduced the action, if after 2.1
    states: States | None = None  # None: see STATES_BY_TYPE (reboot)


def _vm(*states: str) -> frozenset:
    return frozenset(states)


RULES = {rule.action: rule for rule in (
    Rule("os-stop", _SERVERS % "stop", OWNER, states=States(_vm(ACTIVE, ERROR))),
    Rule("os-start", _SERVERS % "start", OWNER, states=States(_vm(STOPPED))),
    Rule("reboot", _SERVERS % "reboot", PROJECT),
    Rule("pause", "os_compute_api:os-pause-server:pause", OWNER, states=States(_vm(ACTIVE))),
    Rule("unpause", "os_compute_api:os-pause-server:unpause", PROJECT,
         states=States(_vm(PAUSED))),
    Rule("suspend", "os_compute_api:os-suspend-server:suspend", OWNER,
         states=States(_vm(ACTIVE))),
    Rule("resume", "os_compute_api:os-suspend-server:resume", PROJECT,
         states=States(_vm(SUSPENDED))),
    Rule("resize", _SERVERS % "resize", OWNER, states=States(_vm(ACTIVE, STOPPED))),
    Rule("confirmResize", _SERVERS % "confirm_resize", PROJECT, states=States(_vm(RESIZED))),
    Rule("revertResize", _SERVERS % "revert_resize", PROJECT, states=States(_vm(RESIZED))),
    # A cold migration is a resize to the same flavor (compute API resize()).
    Rule("migrate", _MIGRATE % "migrate", PROJECT, host_rule=_MIGRATE % "migrate:host",
         host_since=(2, 56), states=States(_vm(ACTIVE, STOPPED))),
    Rule("os-migrateLive", _MIGRATE % "migrate_live", PROJECT,
         host_rule=_MIGRATE % "migrate_live:host", states=States(_vm(ACTIVE, PAUSED))),
    Rule("shelve", _SHELVE % "shelve", OWNER,
         states=States(_vm(ACTIVE, STOPPED, PAUSED, SUSPENDED))),
    Rule("shelveOffload", _SHELVE % "shelve_offload", OWNER, states=States(_vm(SHELVED))),
    # unshelve_to_host is checked by the compute API, on top of unshelve.
    Rule("unshelve", _SHELVE % "unshelve", PROJECT, extra_host_rule=_SHELVE % "unshelve_to_host",
         host_since=(2, 91), states=States(_vm(SHELVED, SHELVED_OFFLOADED))),
    Rule("rebuild", _SERVERS % "rebuild", OWNER, states=States(_vm(ACTIVE, STOPPED, ERROR))),
    Rule("evacuate", "os_compute_api:os-evacuate", OWNER,
         states=States(_vm(ACTIVE, STOPPED, ERROR), task=ANY, lock=False)),
    Rule("forceDelete", "os_compute_api:os-deferred-delete:force", OWNER,
         states=States(ANY, task=ANY, launched=False)),
    Rule("restore", "os_compute_api:os-deferred-delete:restore", PROJECT,
         states=States(_vm(SOFT_DELETED))),
    Rule("trigger_crash_dump", _SERVERS % "trigger_crash_dump", OWNER, since=(2, 17),
         states=States(_vm(ACTIVE, PAUSED, RESCUED, RESIZED, ERROR))),
    Rule("rescue", "os_compute_api:os-rescue", OWNER, states=States(_vm(ACTIVE, STOPPED, ERROR))),
    Rule("unrescue", "os_compute_api:os-unrescue", PROJECT, states=States(_vm(RESCUED))),
    # DELETE /servers/{id}: soft_delete() falls back to delete(), which checks no state.
    Rule("delete", _SERVERS % "delete", OWNER, states=States(ANY, task=ANY, launched=False)),
    Rule("force_complete", "os_compute_api:servers:migrations:force_complete", PROJECT,
         since=(2, 22), states=States(_vm(ACTIVE), task=frozenset({MIGRATING}))),
    Rule("migration-abort", "os_compute_api:servers:migrations:delete", PROJECT, since=(2, 24),
         states=States(ANY, task=frozenset({MIGRATING}))),
)}

# compute API _soft_reboot() / _hard_reboot(), by the body's reboot type.
STATES_BY_TYPE = {
    ("reboot", "SOFT"): States(_vm(ACTIVE)),
    ("reboot", "HARD"): States(_vm(ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR),
                               task=ALLOW_HARD_REBOOT_TASKS),
}

# The policy rule that decides a context's is_admin (check_instance_lock uses it).
CONTEXT_IS_ADMIN = "context_is_admin"

# nova/api/openstack/common.py _STATE_MAP read backwards: the vm_states a status
# can stand for, and the task_states it implies (ANY: the status is a vm_state's
# default, so any task state not listed for it there).
STATUS = {
    "ACTIVE": (_vm(ACTIVE), ANY),
    "BUILD": (_vm(BUILDING), ANY),
    "SHUTOFF": (_vm(STOPPED), ANY),
    "VERIFY_RESIZE": (_vm(RESIZED), ANY),
    "PAUSED": (_vm(PAUSED), ANY),
    "SUSPENDED": (_vm(SUSPENDED), ANY),
    "RESCUE": (_vm(RESCUED), ANY),
    "ERROR": (_vm(ERROR), ANY),
    "DELETED": (_vm(DELETED), ANY),
    "SOFT_DELETED": (_vm(SOFT_DELETED), ANY),
    "SHELVED": (_vm(SHELVED), ANY),
    "SHELVED_OFFLOADED": (_vm(SHELVED_OFFLOADED), ANY),
    "REBOOT": (_vm(ACTIVE), SOFT_REBOOTING),
    "HARD_REBOOT": (_vm(ACTIVE), HARD_REBOOTING),
    "PASSWORD": (_vm(ACTIVE), frozenset({"updating_password"})),
    "REBUILD": (_vm(ACTIVE, STOPPED, ERROR), REBUILDING),
    "MIGRATING": (_vm(ACTIVE, PAUSED), frozenset({MIGRATING})),
    "RESIZE": (_vm(ACTIVE, STOPPED), RESIZING),
    "REVERT_RESIZE": (_vm(RESIZED), frozenset({"resize_reverting"})),
}
