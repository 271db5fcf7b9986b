#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: worker_rollback
short_description: Roll a worker pool back on a host in one call, workers stopped first and started after
version_added: 0.2.0
author: queueops.rollback maintainers (@queueops)
description:
  - The per-host work of a rollback, in the order that loses nothing, as one task (one connection to the
    host instead of one per step, which is most of a rollback's time over SSH).
  - 1. Stops the pool's workers (O(units)), so the bad release takes no more tasks; each worker gets its
    warm shutdown (SIGTERM, after which it takes nothing new and finishes or hands back what it runs; see the unit's
    C(KillMode=mixed) and C(TimeoutStopSec)).
  - 2. Marks O(version) failed and switches C(current) back to the last good release of the pool's
    history, or to O(to_version), exactly as M(queueops.rollback.worker_version) with
    O(queueops.rollback.worker_version#module:state=rolled_back)
    does.
  - 3. Restores the configuration snapshot of the release it went back to (O(snapshot_name), by
    default C(<pool>-<release>), as the rollout role names them), verified before anything is touched,
    as M(queueops.rollback.config_snapshot) with
    O(queueops.rollback.config_snapshot#module:state=restored) does. A release deployed before its
    configuration was managed has no snapshot; the task warns and the files stay.
  - 4. Starts the workers on the release it went back to.
  - With O(stop_grace), the workers were told to stop already and take no more tasks; steps 2 and 3 happen
    while they finish what they run and exit (a worker reads C(current) and its configuration only at start),
    then the units are stopped and started, so the good release consumes as soon as the bad one is gone.
  - A rollback is a state; when O(version) is not current any more, nothing is switched, the snapshot is
    restored only if the files differ from it, and the workers are started only if one of O(units) is
    not active. A re-run after an interrupted one finishes the job; a re-run after a complete one
    changes nothing.
  - RQ refuses to start a worker while C(rq:suspended) is set; this module does not pause queues, so
    it is not in the way. Waiting until the workers consume, replaying and resuming are the
    controller's part (see the rollout role).
extends_documentation_fragment:
  - queueops.rollback.pool
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
  - queueops.rollback.attributes.idempotent
options:
  version:
    description:
      - The bad release to roll back from. Only while it is current are the workers stopped and
        C(current) switched.
    type: str
    required: true
  to_version:
    description:
      - The release to return to instead of the last good one of the history. It must be staged and
        not failed.
    type: str
  reason:
    description:
      - Free text stored with the history records, for the post-mortem.
    type: str
  units:
    description:
      - The systemd units that run the pool's workers, stopped before the switch and started after it.
      - Default C(<pool>.target), the target the M(queueops.rollback.worker_release) role installs (its
        instances are C(PartOf) it, so they stop and start with it).
    type: list
    elements: str
  stop_grace:
    description:
      - Seconds the workers get to exit on their own before the units are stopped, when they were already
        told to stop (the health gate's O(queueops.rollback.rollout_check#module:halt_unhealthy)). The
        stop's SIGTERM would be their second signal, and RQ and Celery take a second signal as a forced
        (cold) stop that kills the task they run; within the grace they finish it. V(0) stops at once.
    type: float
    default: 0
  restore_config:
    description:
      - Whether to restore the configuration snapshot of the release it went back to.
    type: bool
    default: true
  snapshot_name:
    description:
      - The snapshot to restore. Default C(<pool>-<release it went back to>).
    type: str
  snapshot_root:
    description:
      - Where the snapshots are, as O(queueops.rollback.config_snapshot#module:root).
    type: path
    default: /var/lib/queueops/snapshots
  allowed_roots:
    description:
      - As O(queueops.rollback.config_snapshot#module:allowed_roots) for the restore.
    type: list
    elements: path
notes:
  - Check mode reports what would be done (RV(actions)) and touches nothing.
  - A snapshot that also holds Redis keys is refused (this module runs on the worker host and does not
    talk to Redis); restore it with M(queueops.rollback.config_snapshot) from the controller.
seealso:
  - module: queueops.rollback.worker_version
  - module: queueops.rollback.config_snapshot
  - module: ansible.builtin.systemd_service
"""

EXAMPLES = r"""
- name: Roll the orders workers back from 2.4.1, to the last good release, with its configuration
  queueops.rollback.worker_rollback:
    pool: orders
    version: 2.4.1
    reason: "health gate failed, job {{ tower_job_id | default('manual') }}"

- name: Roll back to a named release, two units of their own, no configuration restore
  queueops.rollback.worker_rollback:
    pool: orders
    version: 2.4.1
    to_version: 2.3.0
    units: [orders-fast.service, orders-slow.service]
    restore_config: false
"""

RETURN = r"""
current:
  description: The release C(current) points to afterwards (in check mode, would point to).
  type: str
  returned: always
  sample: 2.3.0
rolled_back:
  description: Whether C(current) was switched away from O(version) by this run.
  type: bool
  returned: always
  sample: true
restored:
  description: What the restore put back (files by path), or null when nothing was restored.
  type: dict
  returned: always
  sample: {"files": ["/etc/queueops/orders.env"], "keys": []}
snapshot:
  description: The snapshot restored or compared (name and id), or null when there is none.
  type: dict
  returned: always
  sample: {"name": "orders-2.3.0", "id": "20261201T101500.000000Z-1"}
stopped:
  description: Whether the workers were stopped (they are started again unless the run failed).
  type: bool
  returned: always
  sample: true
started:
  description: The units started (or restarted after a configuration restore) by this run.
  type: list
  elements: str
  returned: always
  sample: [orders.target]
actions:
  description: What was done, in order.
  type: list
  elements: str
  returned: always
  sample:
    - stop orders.target
    - mark release 2.4.1 failed
    - switch current from 2.4.1 to 2.3.0
    - start orders.target
"""

from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import new_module
from ansible_collections.queueops.rollback.plugins.module_utils.releases import Pool, ReleaseError
from ansible_collections.queueops.rollback.plugins.module_utils.services import UnitError, Units
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    SnapshotError,
    UnknownSnapshot,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_store import (
    apply_restore,
    plan_restore,
    validate_snapshot_name,
)

OPTIONS: dict[str, dict[str, Any]] = {
    "pool": {"type": "str", "required": True},
    "root": {"type": "path", "default": "/opt/queueops"},
    "lock_timeout": {"type": "float", "default": 0},
    "version": {"type": "str", "required": True},
    "to_version": {"type": "str"},
    "reason": {"type": "str"},
    "units": {"type": "list", "elements": "str"},
    "stop_grace": {"type": "float", "default": 0},
    "restore_config": {"type": "bool", "default": True},
    "snapshot_name": {"type": "str"},
    "snapshot_root": {"type": "path", "default": "/var/lib/queueops/snapshots"},
    "allowed_roots": {"type": "list", "elements": "path"},
}


def _restore(module, release: str, result: dict) -> bool:
    """Restore the snapshot of ``release`` when the files differ from it; whether anything changed."""
    params = module.params
    name = validate_snapshot_name(params["snapshot_name"] or f"{params['pool']}-{release}")
    try:
        plan = plan_restore(params["snapshot_root"], name, None, None, allowed_roots=params["allowed_roots"])
    except UnknownSnapshot:
        module.warn(f"no configuration snapshot {name} under {params['snapshot_root']}: configuration left as it is")
        return False
    result["snapshot"] = {"name": name, "id": plan.snap_id}
    if not plan.changed:
        return False
    result["restored"] = plan.outline()
    result["actions"].append(f"restore configuration snapshot {name} ({plan.snap_id})")
    if not module.check_mode:
        apply_restore(plan, params["snapshot_root"], name)
    return True


def _stop_halted(units: Units, grace: float, result: dict) -> None:
    """Let halted workers finish what they run and exit, at most ``grace`` s, then stop the units."""
    if not units.module.check_mode:
        units.wait_inactive(grace)
    result["actions"].append(units.stop())
    result["stopped"] = True


def run_module() -> None:
    module = new_module(OPTIONS, redis=False)
    params = module.params
    units = Units(module, params["units"] or [f"{params['pool']}.target"])
    result: dict[str, Any] = {
        "changed": False,
        "rolled_back": False,
        "restored": None,
        "snapshot": None,
        "stopped": False,
        "started": [],
        "actions": [],
    }
    try:
        pool = Pool(params["root"], params["pool"], check_mode=module.check_mode)
        with pool.locked(f"rollback from {params['version']}", create=False, timeout=params["lock_timeout"]):
            pool.reconcile()
            before = pool.describe()
            result["current"] = pool.current()
            # Workers the health gate halted take no more tasks and exit on their own once their task
            # is done: the switch and the restore happen meanwhile (a worker reads `current` and its
            # configuration only at start), and the units are stopped once they are gone.
            bad_is_current = pool.current() == params["version"]
            halted = bad_is_current and params["stop_grace"] > 0
            if bad_is_current:
                # What would refuse the switch (no good release to go to) refuses it before the
                # workers stop; the target's digest is checked by the switch itself.
                pool.rollback_target(params["version"], to_version=params["to_version"])
                if not halted:
                    result["actions"].append(units.stop())  # 1. the bad release takes no more tasks
                    result["stopped"] = True
            try:
                result["rolled_back"] = pool.rollback(
                    params["version"], to_version=params["to_version"], reason=params["reason"]
                )
                result["actions"] += pool.actions
                current = result["current"] = pool.current()
                restored = params["restore_config"] and current is not None and _restore(module, current, result)
            except BaseException:
                if halted:
                    _stop_halted(units, params["stop_grace"], result)
                if result["stopped"]:  # never a pool left with no worker: they run what is current now
                    if not result["rolled_back"]:
                        result["actions"] += pool.actions
                    result["actions"].append(units.start())
                    result["started"] = units.names
                raise
            if halted:
                _stop_halted(units, params["stop_grace"], result)
            if result["stopped"] or not units.active():
                result["actions"].append(units.start())
                result["started"] = units.names
            elif restored:  # the workers read their configuration at start
                result["actions"].append(units.restart())
                result["started"] = units.names
            after = pool.describe()
    except (ReleaseError, SnapshotError, UnitError) as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg=f"filesystem error in {params['root']}/{params['pool']}: {exc}", **result)
    result["changed"] = bool(result["actions"])
    summary = (
        f"rolled back {params['pool']} from {params['version']} to {result['current']}"
        if result["rolled_back"]
        else f"{params['pool']} {params['version']} is not current (current is {result['current']})"
    )
    result["msg"] = summary + (f"; {', '.join(result['actions'])}" if result["actions"] else "; nothing to do")
    if module._diff and before != after:
        result["diff"] = {"before": before, "after": after, "before_header": pool.dir, "after_header": pool.dir}
    for warning in pool.warnings:
        module.warn(warning)
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
