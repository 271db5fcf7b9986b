#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: queue_info
short_description: Facts about RQ or Celery queues and their workers
version_added: 0.1.0
author: queueops.rollback maintainers (@queueops)
description:
  - Read-only. Per queue the depth, what is in flight, the failed, scheduled and deferred counts and
    whether it is paused; the workers with their host, state, release and last heartbeat.
  - The release is read from the worker name convention C(<pool>:<version>:<index>).
  - For Celery, counts of failed, scheduled and deferred tasks are not kept by the broker and are null.
extends_documentation_fragment:
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.info_module
options:
  backend:
    description: The worker framework.
    type: str
    required: true
    choices: [rq, celery]
  queues:
    description: Names of the queues. For RQ, all known queues (C(rq:queues)) by default.
    type: list
    elements: str
  workers:
    description: Celery only. Node names to ask; all that answer by default.
    type: list
    elements: str
  reply_timeout:
    description: Celery only. Seconds to wait for the workers' answers.
    type: float
    default: 1.0
"""

EXAMPLES = r"""
- name: Read the state of the orders queue before the deploy
  queueops.rollback.queue_info:
    backend: rq
    queues: [orders]
    redis_url: "{{ redis_url }}"
  register: orders_info
"""

RETURN = r"""
queues:
  description:
    - Queue name to its facts (depth, in_flight, failed, scheduled, deferred, paused; RQ also finished;
      Celery also paused_from, the workers a pause took the queue from).
    - For RQ, in_flight leaves out the jobs of workers that are gone (see RV(abandoned)).
  returned: always
  type: dict
  sample:
    orders: {"depth": 3, "in_flight": 1, "failed": 0, "scheduled": 0, "deferred": 0, "finished": 7, "paused": false}
abandoned:
  description:
    - RQ. Queue name to the jobs left in its started registry by workers that are gone (killed; worker hash
      expired or marked dead, or no Redis connection named after them), with job_id, queue and worker.
      Only queues that have some. C(queueops.rollback.task_requeue) replays them.
  returned: backend is rq
  type: dict
workers:
  description: Workers of those queues (name, host, state, pool, release, last_heartbeat, queues).
  returned: always
  type: list
  elements: dict
suspended:
  description: RQ. Whether C(rq:suspended) is set (it pauses every queue of the Redis database).
  returned: backend is rq
  type: bool
suspension_ttl:
  description: RQ. Seconds before the suspension expires; null when it does not expire or is not set.
  returned: backend is rq
  type: int
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.queueops.rollback.plugins.module_utils import celery_backend, rq_backend
from ansible_collections.queueops.rollback.plugins.module_utils.identity import parse_worker_name
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    REDIS_MUTUALLY_EXCLUSIVE,
    REDIS_REQUIRED_TOGETHER,
    connect,
    redis_argument_spec,
)


def _rq_info(client, queues: list[str] | None) -> dict[str, Any]:
    queues = queues or rq_backend.known_queues(client)
    suspension = rq_backend.suspension(client)
    facts = {}
    abandoned: dict[str, list] = {}
    for queue in queues:
        counts = rq_backend.queue_counts(client, queue)
        running, gone = rq_backend.split_in_flight(client, [queue])
        if gone:
            abandoned[queue] = [e.as_dict() for e in gone]
        facts[queue] = {
            "depth": counts["depth"],
            "in_flight": len(running),
            "failed": counts["failed"],
            "scheduled": counts["scheduled"],
            "deferred": counts["deferred"],
            "finished": counts["finished"],
            "paused": suspension["suspended"],
        }
    workers = [w.as_dict() for w in rq_backend.list_workers(client, queues)]
    return {
        "queues": facts,
        "workers": workers,
        "suspended": suspension["suspended"],
        "suspension_ttl": suspension["ttl"],
        "abandoned": abandoned,
    }


def _celery_info(module: AnsibleModule, client, queues: list[str] | None) -> dict[str, Any]:
    if celery_backend.CELERY_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("celery"), exception=celery_backend.CELERY_IMPORT_ERROR)
    if not queues:
        module.fail_json(msg="queues is required for Celery: the broker keeps no list of queues")
    p = module.params
    app = celery_backend.make_app(p)
    try:
        answered = celery_backend.consumers(app, p["workers"], p["reply_timeout"])
        nodes = sorted(answered) or None
        tasks = celery_backend.in_flight(app, client, queues, nodes, p["reply_timeout"]) if nodes else []
        stats = app.control.inspect(destination=nodes, timeout=p["reply_timeout"]).stats() or {} if nodes else {}
    finally:
        celery_backend.close_app(app)
    records = celery_backend.paused_records(client, queues)
    facts = {
        queue: {
            "depth": celery_backend.queue_depth(client, queue),
            "in_flight": sum(1 for t in tasks if t["queue"] == queue),
            "failed": None,
            "scheduled": None,
            "deferred": None,
            "paused": not any(queue in consumed for consumed in answered.values()),
            "paused_from": records.get(queue, []),
        }
        for queue in queues
    }
    workers = []
    for node, consumed in sorted(answered.items()):
        if p["queues"] and not set(consumed) & set(queues) and not any(node in r for r in records.values()):
            continue
        identity = parse_worker_name(node)
        workers.append(
            {
                "name": node,
                "host": celery_backend.node_host(node),
                "pid": (stats.get(node) or {}).get("pid"),
                "state": "consuming" if set(consumed) & set(queues) else "paused",
                "queues": consumed,
                "pool": identity.pool if identity else None,
                "release": identity.version if identity else None,
                "last_heartbeat": None,
            }
        )
    return {"queues": facts, "workers": workers}


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=redis_argument_spec(
            backend={"type": "str", "required": True, "choices": ["rq", "celery"]},
            queues={"type": "list", "elements": "str"},
            workers={"type": "list", "elements": "str"},
            reply_timeout={"type": "float", "default": 1.0},
        ),
        mutually_exclusive=REDIS_MUTUALLY_EXCLUSIVE,
        required_together=REDIS_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    queues = list(dict.fromkeys(q.strip() for q in module.params["queues"] or [] if q and q.strip()))
    client = connect(module)
    is_rq = module.params["backend"] == "rq"
    facts = _rq_info(client, queues) if is_rq else _celery_info(module, client, queues)
    module.exit_json(changed=False, backend=module.params["backend"], **facts)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
