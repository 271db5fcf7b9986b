#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_lease
short_description: Hold the fleet-wide lease of a pool, so one run at a time deploys or rolls it back
version_added: 0.2.0
author: queueops.rollback maintainers (@queueops)
description:
  - The per-pool file lock of M(queueops.rollback.worker_version) stops two runs on one host. Two controllers
    deploying the same pool to B(different) hosts would still mix releases across the fleet; the lease stops
    them. It is one key in the pool's Redis, C(queueops:lease:<pool>), with the owner, the purpose, since when
    it is held and an expiry, so a controller that dies cannot hold the pool for ever.
  - O(state=acquired) takes the lease, or renews it (a new expiry) when O(owner) already holds it, so every
    C(serial) batch of one run takes it again and a run that re-acquires changes nothing. When another run holds
    it the task fails, naming that run, what it does, for how long it has held it and when the lease expires.
  - A lease whose owner is a process of the host this module runs on that no longer runs (the controller was
    killed mid-run) is taken over, with a warning; this is how a re-run of the rollback on that controller
    proceeds at once. The owner ids of the lookup P(queueops.rollback.run_owner#lookup) name the host and the
    process. A lease of another controller is taken only with O(force), or after it expires.
  - O(state=released) gives the lease back; releasing a free pool changes nothing, and another run's lease is
    refused unless O(force).
  - Acquire and release are each one Lua script, so two controllers that race cannot both win.
  - Every change is recorded in the C(queueops:events) stream.
  - Run it once per run (C(run_once), delegated to the controller), with the Redis connection of the pool.
extends_documentation_fragment:
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
options:
  pool:
    description: The pool the lease is of; the same name rule as every module's O(pool).
    type: str
    required: true
  owner:
    description:
      - Who holds the lease, the same string for every task of one run (one line, up to 200 characters).
      - Use the lookup P(queueops.rollback.run_owner#lookup), which names this controller and its ansible-playbook
        process, so that a lease left by a killed run can be told from a live one.
    type: str
    required: true
  state:
    description: V(acquired) takes or renews the lease; V(released) gives it back; V(query) only reads it.
    type: str
    choices: [acquired, released, query]
    default: acquired
  ttl:
    description:
      - O(state=acquired). Seconds until the lease expires by itself unless renewed. Longer than one C(serial)
        batch of the deploy (each batch renews it).
    type: float
    default: 1800
  purpose:
    description: O(state=acquired). What the run does (C(deploy 1.4.0)), shown to a run that is refused.
    type: str
  force:
    description:
      - Take or release a lease another run holds. For an operator who knows that run is dead and cannot wait
        for the expiry; a warning names what was taken.
    type: bool
    default: false
notes:
  - "Redis ACL: the user needs C(+get +pttl +multi +exec +eval +set +del +xadd ~queueops:lease:* ~queueops:events)."
"""

EXAMPLES = r"""
- name: Take the lease of pool orders for this run (every batch renews it)
  queueops.rollback.rollout_lease:
    pool: orders
    owner: "{{ lookup('queueops.rollback.run_owner') }}"
    purpose: deploy 2.4.1
    ttl: 1800
    redis_url: "{{ redis_url }}"
  delegate_to: localhost
  run_once: true

- name: Give it back, whatever happened
  queueops.rollback.rollout_lease:
    pool: orders
    owner: "{{ lookup('queueops.rollback.run_owner') }}"
    state: released
    redis_url: "{{ redis_url }}"
  delegate_to: localhost
  run_once: true

- name: Take over the lease of a controller known to be dead
  queueops.rollback.rollout_lease:
    pool: orders
    owner: "{{ lookup('queueops.rollback.run_owner') }}"
    purpose: rollback after the ci-2 controller died
    force: true
    redis_url: "{{ redis_url }}"
"""

RETURN = r"""
state:
  description:
    - What happened - V(acquired) (taken, or taken over), V(renewed) (O(owner) held it already), V(released),
      V(absent) (nothing to release, or nothing held for O(state=query)), V(held) (O(state=query), by whom
      RV(lease) says).
  returned: always
  type: str
  sample: acquired
lease:
  description:
    - The lease after the task (owner, purpose, since as a UNIX time, host, expires_in seconds); null when free.
  returned: always
  type: dict
  sample: {"owner": "ctl-1/4242.981233", "purpose": "deploy 2.4.1", "since": 1764658000.5, "host": "ctl-1",
           "expires_in": 1800.0}
previous:
  description: The lease before the task, when there was one (taken over, forced, renewed or released).
  returned: always
  type: dict
  sample: null
"""

from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils import lease
from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import failing_in_words, new_module
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect

MODULE = "rollout_lease"
OPTIONS: dict[str, dict[str, Any]] = {
    "pool": {"type": "str", "required": True},
    "owner": {"type": "str", "required": True},
    "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released", "query"]},
    "ttl": {"type": "float", "default": 1800},
    "purpose": {"type": "str"},
    "force": {"type": "bool", "default": False},
}


def run_module() -> None:
    module = new_module(OPTIONS)
    p = module.params
    client = connect(module)
    with failing_in_words(module, f"{p['state'].rstrip('d')} the lease of pool {p['pool']}"):
        try:
            if p["state"] == "query":
                held = lease.read(client, p["pool"])
                outcome = lease.LeaseOutcome(False, "held" if held else "absent", held, None)
            elif p["state"] == "acquired":
                outcome = lease.acquire(
                    client,
                    p["pool"],
                    p["owner"],
                    ttl=p["ttl"],
                    purpose=p["purpose"],
                    force=p["force"],
                    check_mode=module.check_mode,
                )
            else:
                outcome = lease.release(client, p["pool"], p["owner"], force=p["force"], check_mode=module.check_mode)
        except lease.LeaseHeld as exc:
            module.fail_json(msg=str(exc), changed=False, state="held", lease=lease.read(client, p["pool"]))
        for warning in outcome.warnings:
            module.warn(warning)
        taken_from = outcome.previous if outcome.previous and outcome.previous.get("owner") != p["owner"] else None
        if outcome.changed and not module.check_mode:
            record_or_warn(
                module,
                client,
                MODULE,
                "lease " + ("released" if outcome.state == "released" else "acquired"),
                pool=p["pool"],
                owner=p["owner"],
                purpose=p["purpose"],
                taken_from=(taken_from or {}).get("owner"),
            )
    result: dict[str, Any] = {
        "changed": outcome.changed,
        "state": outcome.state,
        "lease": outcome.lease,
        "previous": outcome.previous,
    }
    if module._diff and outcome.changed:
        result["diff"] = {
            "before": lease.describe(outcome.previous) + "\n" if outcome.previous else "(free)\n",
            "after": lease.describe(outcome.lease) + "\n" if outcome.lease else "(free)\n",
            "before_header": lease.lease_key(p["pool"]),
            "after_header": lease.lease_key(p["pool"]),
        }
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
