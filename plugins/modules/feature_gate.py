#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: feature_gate
short_description: Open, close and read the feature gates of a pool in Redis
version_added: 0.3.0
author: queueops.rollback maintainers (@queueops)
description:
  - A feature gate lets a release ship new task code turned off, and turn it on for a share of tasks once the
    health gate passed. Closing it is the fastest rollback there is - every worker's next read sees it, with no
    restart and no task stopped.
  - The gates of a pool live in one hash of the pool's Redis, C(queueops:gates:<pool>); each field is a gate, its
    value the JSON C({"percentage", "release", "since", "expires_at"}). An absent field is a closed gate.
  - The app reads the field (C(HGET queueops:gates:<pool> <gate>)) and takes the new path for a task when the gate
    is open, its C(expires_at) (UNIX time, or null) not passed, and the CRC-32 of C(<gate>:<task key>) modulo 100
    is below the percentage, so one task key gets the same answer from every worker and on every retry.
  - O(state=open) opens a gate to O(percentage) of tasks. A gate already open as asked is left as it is, its
    expiry included (a re-run does not keep a temporary gate open for ever); an expired gate is opened again.
  - O(state=closed) closes O(gate), or every gate the release O(version) opened (what a rollback of that release
    does first), or every gate of the pool when neither is given. Closing a closed gate changes nothing.
  - O(state=query) only reads, one gate or all of them.
  - Changes are one Redis transaction on the hash; each opened or closed gate is recorded in the
    C(queueops:events) stream. The event of an opened gate carries its C(since), the time taken before the
    gate was written, so no task can have read it open earlier (the event's own time comes after the write).
extends_documentation_fragment:
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
options:
  pool:
    description: The pool the gates are of; the same name rule as every module's O(pool).
    type: str
    required: true
  gate:
    description:
      - The gate's name (the same rule as a pool's name, for example V(new_pricing)).
      - Required with O(state=open). With O(state=closed) or O(state=query), leave it out to act on every gate of
        the pool (O(state=closed) then narrowed by O(version)).
    type: str
  state:
    description: V(open) opens or changes the gate; V(closed) closes it (or them); V(query) only reads.
    type: str
    choices: [open, closed, query]
    default: open
  percentage:
    description:
      - O(state=open). The share of tasks, 0 to 100, that take the new path. V(0) closes the gate.
    type: int
    default: 100
  version:
    description:
      - O(state=open). The release (its version) that opens the gate, kept with it as C(release) so that the
        rollback of that release closes it (O(state=closed) with O(version) and no O(gate)).
      - O(state=closed). Close only the gates this release opened.
    type: str
  expires_in:
    description:
      - O(state=open). Seconds after which the gate reads as closed by itself (the app compares C(expires_at) with
        its clock), for a trial that must end even if nobody comes back to it. Leave it out for a gate that stays
        open until closed.
    type: float
notes:
  - "Redis ACL: the user needs C(+hget +hgetall +hset +hdel +watch +multi +exec +xadd ~queueops:gates:*
    ~queueops:events)."
  - Keep the clocks of the hosts in step (NTP) when gates expire, since each worker decides by its own clock.
"""

EXAMPLES = r"""
- name: Open the new pricing path to 10 % of tasks once the health gate of 2.5.0 passed
  queueops.rollback.feature_gate:
    pool: orders
    gate: new_pricing
    percentage: 10
    version: 2.5.0
    redis_url: "{{ redis_url }}"
  delegate_to: localhost
  run_once: true

- name: A trial that closes by itself after an hour
  queueops.rollback.feature_gate:
    pool: orders
    gate: batch_invoices
    expires_in: 3600
    version: 2.5.0
    redis_url: "{{ redis_url }}"

- name: Rollback of 2.5.0, first step - close every gate it opened, before any restart
  queueops.rollback.feature_gate:
    pool: orders
    state: closed
    version: 2.5.0
    redis_url: "{{ redis_url }}"

- name: Read the gates of the pool
  queueops.rollback.feature_gate:
    pool: orders
    state: query
    redis_url: "{{ redis_url }}"
  register: orders_gates
"""

RETURN = r"""
gates:
  description:
    - The gates after the task (for O(state=query), the gates read), by name - C(open), C(percentage) (0 when
      closed or expired), C(release), C(since) (UNIX time it was opened), C(expires_in) (seconds, null when it
      does not expire or has expired), C(expired).
    - In check mode, what they would be.
  returned: always
  type: dict
  sample: {"new_pricing": {"name": "new_pricing", "open": true, "percentage": 10, "release": "2.5.0",
           "since": 1764658000.5, "expires_in": null, "expired": false}}
opened:
  description: The gates opened or changed by the task.
  returned: always
  type: list
  elements: str
  sample: [new_pricing]
closed:
  description: The gates closed by the task (expired ones included, which the app already read as closed).
  returned: always
  type: list
  elements: str
  sample: []
"""

import json
import time
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils import gates
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import failing_in_words, new_module
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect

MODULE = "feature_gate"
OPTIONS: dict[str, dict[str, Any]] = {
    "pool": {"type": "str", "required": True},
    "gate": {"type": "str"},
    "state": {"type": "str", "default": "open", "choices": ["open", "closed", "query"]},
    "percentage": {"type": "int", "default": 100},
    "version": {"type": "str"},
    "expires_in": {"type": "float"},
}


def problem(params: dict[str, Any]) -> str | None:
    if params["state"] == "open" and not params["gate"]:
        return "state=open needs the gate to open"
    if params["state"] != "open" and params["expires_in"] is not None:
        return "expires_in is for state=open only"
    if params["state"] == "query" and params["version"]:
        return "state=query reads by gate, not by release; leave version out"
    return None


def run_module() -> None:
    module = new_module(OPTIONS, problem=problem)
    p = module.params
    client = connect(module)
    pool, name = p["pool"], p["gate"]
    doing = {"open": f"open gate {name}", "closed": "close the gates", "query": "read the gates"}[p["state"]]
    with failing_in_words(module, f"{doing} of pool {pool}"):
        if p["state"] == "query":
            change = None
            stored = gates.read(client, pool)
            shown = {name: stored.get(name)} if name else stored
        elif p["state"] == "open":
            change = gates.open_gate(
                client,
                pool,
                name,
                percentage=p["percentage"],
                release=p["version"],
                expires_in=p["expires_in"],
                check_mode=module.check_mode,
            )
        else:
            change = gates.close_gates(
                client, pool, names=[name] if name else None, release=p["version"], check_mode=module.check_mode
            )
        if change is not None:
            shown = {**dict.fromkeys(change.closed), **change.after}
            gates.record_change(module, client, MODULE, pool, change, p["version"])
    now = time.time()
    result: dict[str, Any] = {
        "changed": bool(change and change.changed),
        "gates": {gate_name: gates.describe(gate_name, gate, now) for gate_name, gate in sorted(shown.items())},
        "opened": change.opened if change else [],
        "closed": change.closed if change else [],
    }
    if module._diff and change is not None and change.changed:
        result["diff"] = {
            "before": json.dumps(change.before, indent=2, sort_keys=True) + "\n",
            "after": json.dumps(change.after, indent=2, sort_keys=True) + "\n",
            "before_header": gates.gates_key(pool),
            "after_header": gates.gates_key(pool),
        }
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
