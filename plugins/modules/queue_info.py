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
  - queueops.rollback.backend
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.info_module
options:
  queues:
    description: Names of the queues. For RQ, all known queues (C(rq:queues)) by default.
    type: list
    elements: str
  workers:
    description: Celery only. Node names to ask; all that answer by default.
    type: list
    elements: str
  reply_timeout:
    description:
      - Celery only. Seconds to wait for the workers' answers.
      - Asked of every worker, the wait ends once as many answered as have a remote-control mailbox on the
        broker (C(_kombu.binding.celery.pidbox)), and takes the whole timeout only while a killed worker's
        mailbox is left there.
    type: float
    default: 1.0
  pool:
    description:
      - With O(workers_expected), the pool whose workers to wait for.
    type: str
  version:
    description:
      - With O(workers_expected), the release those workers must run (the version in their names,
        C(<pool>:<version>:<index>)).
    type: str
  workers_expected:
    description:
      - Wait until at least this many live workers of release O(version) of pool O(pool) consume O(queues),
        at most O(timeout) seconds, then report as without it. The task fails when they do not, naming the
        live workers of the pool, so a deploy stops before its health gate judges a release that never started.
      - The module polls several times a second within one call, so a wait costs one task whatever its length
        (an C(until) loop pays a task per try) and a timeout of 15 s is 15 s.
      - RQ counts registered workers the liveness rule does not find gone; Celery the nodes that answer
        consuming one of O(queues), asked once as many nodes of the release have a remote-control mailbox on
        the broker (one read a poll, so workers that are starting are not asked to answer several times a second).
    type: int
  timeout:
    description:
      - Seconds to wait for O(workers_expected) workers; V(0) looks once.
    type: float
    default: 60
notes:
  - "Redis ACL (rq): the user needs C(+ping +client|list +smembers +hgetall +exists +ttl +llen +zcard +zrange +hmget
    %R~rq:*). Read-only, keys included. C(+client|list) tells a live worker from a killed one (refused, the module
    goes by heartbeats only)."
  - "Redis ACL (celery): the user needs C(+ping +multi +exec +llen +sadd +srem +del +brpop +publish +set +get
    +evalsha +script|load +zrevrangebyscore +scan +smembers +hgetall ~*.reply.celery.pidbox* ~unacked_mutex
    ~unacked_index %R~queueops:celery:paused %R~_kombu.binding.* %R~unacked %R~<queue>* &/<db>.celery.pidbox).
    C(<queue>) stands for each of O(queues); every key but the reply lists is read only. The Celery rules hold the
    remote control every Celery client uses: broadcasts published on the channel C(/<db>.celery.pidbox) (C(<db>) is
    the database number), replies read from a list C(<uuid>.reply.celery.pidbox) the client declares and deletes,
    and kombu's C(unacked_mutex) lock and C(unacked_index) read when it starts consuming."
"""

EXAMPLES = r"""
- name: Read the state of the orders queue before the deploy
  queueops.rollback.queue_info:
    backend: rq
    queues: [orders]
    redis_url: "{{ redis_url }}"
  register: orders_info

- name: Wait until the 6 workers of release 2.4.1 consume orders, at most a minute
  queueops.rollback.queue_info:
    backend: celery
    queues: [orders]
    pool: orders
    version: 2.4.1
    workers_expected: 6
    timeout: 60
    redis_url: "{{ redis_url }}"
"""

RETURN = r"""
queues:
  description:
    - Queue name to its facts. C(exists) is false for a name nothing in Redis knows (no jobs, registries,
      bindings or workers; a typo?). C(depth) counts what waits; C(consumers) the live workers consuming it
      (a warning names a queue with a backlog and none). C(paused) is true while its consumption is paused.
    - RQ also C(in_flight) (the started registry less the jobs of workers that are gone, see RV(abandoned)),
      C(failed), C(scheduled), C(deferred) and C(finished).
    - Celery also C(running) (active), C(prefetched) (reserved by a worker, not started), C(unacked) (held by
      a worker that did not answer, from the transport's C(unacked) hash), C(in_flight) (their sum), and
      C(paused_from), the workers a pause took the queue from. C(failed), C(scheduled) and C(deferred) are
      null (the broker does not keep them).
    - C(releases), the release queues of that queue (versioned routing, C(<queue>@<version>)), by version, each
      with C(queue) (its name), C(depth), C(consumers) and C(parked) (what waits with no live consumer, because
      its release was rolled back or is not deployed and no other release consumes it). C(parked) is their sum.
      A warning names each release queue with parked tasks; they run once a release that can run them consumes
      the queue, or after M(queueops.rollback.task_requeue) with C(source=queue) moves them. RQ finds release queues
      in C(rq:queues), Celery in kombu's bindings (a producer declares the queue before it sends).
  returned: always
  type: dict
  sample:
    orders: {"exists": true, "depth": 3, "in_flight": 1, "consumers": 2, "failed": 0, "scheduled": 0,
             "deferred": 0, "finished": 7, "paused": false, "parked": 12,
             "releases": {"1.9.0": {"queue": "orders@1.9.0", "depth": 12, "consumers": 0, "parked": 12}}}
abandoned:
  description:
    - RQ. Queue name to the jobs left in its started registry by workers that are gone (killed; worker hash
      expired or marked dead, or no Redis connection named after them), with job_id, queue, worker and
      reason. Only queues that have some. C(queueops.rollback.task_requeue) replays them.
  returned: backend is rq
  type: dict
  sample: {"orders": [{"job_id": "5f0c", "execution_id": null, "queue": "orders", "worker": "orders:2.4.1:1",
           "started_at": "2026-12-01T10:00:00.000000Z", "reason": "its worker is gone"}]}
workers:
  description:
    - Workers of those queues (name, host, pid, state, queues, pool, release; RQ also last_heartbeat, birth,
      current_job and rq_version). An RQ worker the liveness rule finds gone (killed, its hash still there)
      has C(state) V(gone). Celery workers have C(state) V(consuming) or V(paused).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "orders:2.4.1:1", "host": "web-1", "pid": 4242, "state": "idle", "queues": ["orders"],
            "pool": "orders", "release": "2.4.1"}]
waited:
  description: Seconds the module waited for O(workers_expected) workers.
  returned: workers_expected is set
  type: float
  sample: 1.42
suspended:
  description: RQ. Whether C(rq:suspended) is set (it pauses every queue of the Redis database).
  returned: backend is rq
  type: bool
  sample: false
suspension_ttl:
  description: RQ. Seconds before the suspension expires; null when it does not expire or is not set.
  returned: backend is rq
  type: int
  sample: 1790
"""

from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.queueops.rollback.plugins.module_utils import celery_backend, rq_backend
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import (
    BACKEND_OPTION,
    failing_in_words,
    new_module,
    require_celery,
)
from ansible_collections.queueops.rollback.plugins.module_utils.readiness import Readiness, wait_for_release
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect

OPTIONS: dict[str, dict[str, Any]] = {
    "backend": BACKEND_OPTION,
    "queues": {"type": "list", "elements": "str"},
    "workers": {"type": "list", "elements": "str"},
    "reply_timeout": {"type": "float", "default": 1.0},
    "pool": {"type": "str"},
    "version": {"type": "str"},
    "workers_expected": {"type": "int"},
    "timeout": {"type": "float", "default": 60.0},
}


def _wait(
    module: AnsibleModule, consuming: Callable[[], list[dict[str, Any]]], likely: Callable[[], int] | None = None
) -> Readiness | None:
    p = module.params
    if p["workers_expected"] is None:
        return None
    return wait_for_release(consuming, p["pool"], p["version"], p["workers_expected"], p["timeout"], likely=likely)


def _rq_facts(module: AnsibleModule, client, queues: list[str]) -> tuple[dict[str, Any], Readiness | None]:
    readiness = _wait(module, lambda: rq_backend.consuming_workers(client, queues or None))
    return rq_backend.queue_facts(client, queues), readiness


def _celery_facts(module: AnsibleModule, client, queues: list[str]) -> tuple[dict[str, Any], Readiness | None]:
    require_celery(module)
    if not queues:
        module.fail_json(msg="queues is required for Celery: the broker keeps no list of queues")
    p = module.params
    with celery_backend.opened_app(p) as app:
        readiness = _wait(
            module,
            lambda: celery_backend.consuming_workers(app, client, queues, p["reply_timeout"]),
            lambda: celery_backend.mailboxes_of(client, p["pool"], p["version"]),
        )
        return celery_backend.queue_facts(app, client, queues, p["workers"], p["reply_timeout"]), readiness


def run_module() -> None:
    module = new_module(OPTIONS, required_by={"workers_expected": ["pool", "version"]})
    p = module.params
    queues = p["queues"]
    client = connect(module)
    backend = p["backend"]
    read = _rq_facts if backend == "rq" else _celery_facts
    with failing_in_words(module, f"read the {backend} queues and workers"):
        facts, readiness = read(module, client, queues)
    for warning in facts.pop("warnings"):
        module.warn(warning)
    if readiness is None:
        module.exit_json(changed=False, backend=backend, **facts)
    if not readiness.ready:
        module.fail_json(
            msg=readiness.message(p["pool"], p["version"], p["workers_expected"], p["timeout"]),
            changed=False,
            backend=backend,
            waited=readiness.waited,
            **facts,
        )
    module.exit_json(changed=False, backend=backend, waited=readiness.waited, **facts)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
