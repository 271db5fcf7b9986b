#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: task_requeue
short_description: Replay RQ or Celery tasks that a bad release failed or a killed worker abandoned
version_added: 0.1.0
author: queueops.rollback maintainers (@queueops)
description:
  - Puts tasks back on their queue after a rollback, each exactly once, even when the module runs twice.
  - "B(RQ): moves job ids from the failed registry (C(rq:failed:<queue>)), or abandoned entries of the
    started registry (C(rq:wip:<queue>)), back onto C(rq:queue:<queue>), in batches of 1,000 run as one
    server-side script each (atomic per batch). It writes what RQ's own requeue writes (status C(queued),
    C(started_at), C(ended_at) and C(exc_info) cleared, C(enqueued_at) now) and never unpickles or runs
    job data. Works with the RQ 2.x and 1.x key layouts."
  - "B(Celery): re-publishes failed tasks recorded in the Redis result backend (C(celery-task-meta-<id>))
    with the same task id, name, args and kwargs, as a protocol 2 JSON message on the task's queue. This
    needs C(result_extended=True) in the app's configuration: without it the result backend keeps no task
    name or arguments, such tasks are counted under C(skipped) with that reason and a warning says so.
    Only JSON results can be read. A replayed task is marked in C(queueops:replayed:<id>) (30 days) with
    the failure it replays, so a second run does not publish it again; if it fails again later, that
    new failure can be replayed."
  - "Worker identity convention: a worker's name (RQ C(--name)) or node name (Celery C(-n), before C(@host))
    is C(<pool>:<version>:<index>), for example C(orders:2.4.1:3). O(failed_by) relies on it to attribute a
    failure to a release."
extends_documentation_fragment:
  - queueops.rollback.backend
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
options:
  source:
    description:
      - V(failed) replays failed tasks (RQ failed registries; Celery results with status C(FAILURE)).
      - V(abandoned) (RQ only) also puts back at the front of their queue the jobs stuck in an intermediate
        queue (C(rq:queue:<queue>:intermediate), RQ 2.x) - moved there by a worker that died before it took them,
        which RQ itself only fails, at its maintenance every 10 minutes - and the jobs a worker of several queues
        popped and never took (it dequeues with BLPOP, no intermediate queue; a warm shutdown of the idle worker
        raises in between) - their hash says queued, their id is in no queue, and nothing ever runs them. Both
        when no filter (O(failed_by), O(since), O(task_names)) is given; the second scans the job keys
        (C(rq:job:*)).
      - V(abandoned) (RQ only) replays entries of the started registries whose worker is gone, whose
        heartbeat expired (no heartbeat for O(heartbeat_timeout) seconds, or RQ's own expiry passed), or
        whose worker restarted since the job started; and entries of the failed registries that RQ's own
        maintenance failed for the same reasons (C(Job was stuck in intermediate queue), C(AbandonedJobError));
        their task never ran to a failure, their worker went away. Celery needs no such step; with C(acks_late) the
        broker redelivers the tasks of a killed worker by itself.
      - V(queue) moves everything waiting on O(from_queue) to O(to_queue), oldest first (at most O(limit)),
        for example the tasks parked on the queue of a release that was rolled back (C(<queue>@<version>),
        see C(releases) in M(queueops.rollback.queue_info)) to the queue of the fixed release. RQ moves job ids
        and sets each job's C(origin). Celery moves the messages (priority sub-lists to the same priority),
        each pointed at the target queue's binding (declared, as a producer would, when it has none) so a
        redelivery lands there too; a message a worker takes meanwhile stays with that worker.
    type: str
    default: failed
    choices: [failed, abandoned, queue]
  queues:
    description:
      - Queues whose failed or started registries are read (RQ, required for V(failed) and V(abandoned)).
      - For Celery, only failed tasks that ran from one of these queues are replayed; empty means all.
    type: list
    elements: str
    default: []
    aliases: [queue]
  from_queue:
    description: Queue emptied by O(source=queue).
    type: str
  to_queue:
    description:
      - Queue the tasks are put on. By default each task goes back to its own queue (RQ C(origin),
        Celery C(queue) of the result). Required with O(source=queue).
    type: str
  failed_by:
    description:
      - Only tasks run by workers of this release (a version, matched per the worker identity
        convention, narrowed to O(pool) when set), or, when it contains C(*), C(?) or C([), by workers
        whose name matches this shell-style pattern (for example C(orders:2.4.*)).
      - RQ reads the job's C(worker_name); Celery the result's C(worker) (stored with C(result_extended)).
    type: str
  pool:
    description: With a version in O(failed_by), only workers of this pool.
    type: str
  since:
    description:
      - Only tasks that failed (or, for V(abandoned), started) at or after this time.
      - Epoch seconds, ISO 8601 (C(2024-05-01T12:00:00Z), UTC when no zone is given), or a duration ago
        (C(90s), C(30m), C(2h), C(1d)).
    type: str
  task_names:
    description:
      - Only tasks whose name matches one of these shell-style patterns (for example C(orders.tasks.*)).
      - "RQ keeps the function name only inside the pickled job data, which this module never reads; it
        matches the job's C(description) instead, which RQ sets to the call string C(module.func(args))
        unless the application passed its own C(description=) at enqueue time."
    type: list
    elements: str
    default: []
  limit:
    description: Replay at most this many tasks (oldest first for Celery; registry order for RQ).
    type: int
  heartbeat_timeout:
    description:
      - With O(source=abandoned), a worker whose last heartbeat is older than this many seconds is gone,
        unless its named Redis connection is still open (a busy RQ worker refreshes its heartbeat only every
        30 s; a hung one is still caught when its started-registry entry expires).
    type: int
    default: 90
  broker_url:
    description:
      - Celery broker URL to publish to, when it is not the Redis given by the connection options
        (which must hold the result backend). It may carry a password, so it is never logged.
    type: str
notes:
  - Check mode counts what would be replayed and returns its ids; nothing is moved or published.
  - A job whose data expired (RQ C(failure_ttl)) cannot be replayed and is reported under C(skipped).
  - "Redis ACL (rq): the user needs C(+ping +client|list +smembers +hgetall +llen +lrange +zrange +hmget
    +hget +xrevrange +script|load +evalsha +exists +hset +hdel +zrem +rpush +lpop +lrem +lpush +sadd +xadd +scan
    +lpos ~rq:* ~queueops:events).
    The moves run as server-side scripts whose commands (C(HSET), C(ZREM), C(RPUSH)...) the ACL checks too;
    C(+hdel) is for RQ 1.x jobs, C(+client|list) for O(source=abandoned) (which workers are gone),
    C(+lrem +lpush) for its jobs stuck in an intermediate queue, C(+scan +lpos) for the jobs a dequeue dropped,
    C(+hget +xrevrange) for the jobs RQ failed as abandoned (their last result, RQ 2.x; the job hash, 1.x),
    C(+lrange) for check mode of O(source=queue)."
  - "Redis ACL (celery): the user needs C(+ping +scan +mget +get +set +del +script|load +evalsha +multi +exec +llen
    +sadd +lpush +xadd %R~celery-task-meta-* ~queueops:replayed:* ~_kombu.binding.<queue> ~<queue>*
    ~queueops:events). C(<queue>) stands for each queue tasks are published to (O(to_queue), or the queues of the
    failed tasks); C(queueops:replayed:*) are the replay markers. With O(broker_url), the publishing part (C(+multi
    +exec +llen +sadd +lpush) on C(_kombu.binding.<queue>) and C(<queue>*)) is needed there. O(source=queue)
    needs C(+scan +smembers +sadd +llen +lrange +lindex +rpop +lpush +script|load +evalsha +xadd ~_kombu.binding.*
    ~<from_queue>* ~<to_queue>* ~queueops:events)."
seealso:
  - module: queueops.rollback.rollout_check
"""

EXAMPLES = r"""
- name: Replay what release 2.4.1 of orders failed, now that 2.4.0 is back
  queueops.rollback.task_requeue:
    backend: rq
    queues: [orders, emails]
    failed_by: "2.4.1"
    pool: orders
    since: 2h
    redis_url: "{{ orders_redis_url }}"

- name: Recover jobs left in started by workers that were killed
  queueops.rollback.task_requeue:
    backend: rq
    source: abandoned
    queues: [orders]
    redis_host: redis.internal

- name: Re-publish failed Celery tasks of the bad release (result_extended must be on)
  queueops.rollback.task_requeue:
    backend: celery
    queues: [default]
    failed_by: "orders:2.4.1:*"
    task_names: ["orders.*"]
    redis_url: "{{ celery_redis_url }}"

- name: Move everything waiting on orders-v2 back to orders
  queueops.rollback.task_requeue:
    backend: rq
    source: queue
    from_queue: orders-v2
    to_queue: orders

- name: Hand the tasks parked on the queue of the rolled-back 1.9.0 to the fixed 1.9.1
  queueops.rollback.task_requeue:
    backend: celery
    source: queue
    from_queue: orders@1.9.0
    to_queue: orders@1.9.1
    redis_url: "{{ celery_redis_url }}"
"""

RETURN = r"""
replayed:
  description: Number of tasks put back on a queue (in check mode, that would be).
  returned: always
  type: int
  sample: 42
ids:
  description: Ids of the replayed tasks, at most 1,000 (see C(sources) for complete counts).
  returned: always
  type: list
  elements: str
  sample: ["5f0c9d", "77aa01"]
sources:
  description:
    - Per source, C(candidates) looked at, C(selected) by the filters, C(replayed), C(skipped) (reason to
      count) and C(ids) (at most 1,000; C(ids_truncated) tells when more were replayed).
  returned: always
  type: dict
  sample: {"failed": {"candidates": 50, "selected": 42, "replayed": 42, "skipped": {"filtered out": 8},
           "ids": ["b1f0..."], "ids_truncated": false}}
filters:
  description: The filters applied (O(since) as epoch seconds).
  returned: always
  type: dict
  sample: {"failed_by": "2.4.1", "pool": "orders"}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.queueops.rollback.plugins.module_utils import celery_backend, rq_backend
from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import (
    BACKEND_OPTION,
    failing_in_words,
    new_module,
    require_celery,
)
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect
from ansible_collections.queueops.rollback.plugins.module_utils.replay import InvalidFilter, Selection, parse_since

OPTIONS: dict[str, dict[str, Any]] = {
    "backend": BACKEND_OPTION,
    "source": {"type": "str", "default": "failed", "choices": ["failed", "abandoned", "queue"]},
    "queues": {"type": "list", "elements": "str", "default": [], "aliases": ["queue"]},
    "from_queue": {"type": "str"},
    "to_queue": {"type": "str"},
    "failed_by": {"type": "str"},
    "pool": {"type": "str"},
    "since": {"type": "str"},
    "task_names": {"type": "list", "elements": "str", "default": []},
    "limit": {"type": "int"},
    "heartbeat_timeout": {"type": "int", "default": 90},
    "broker_url": {"type": "str", "no_log": True},
}


def _problem(params: dict[str, Any]) -> str | None:
    """What makes this combination of options unusable, in words."""
    backend, source = params["backend"], params["source"]
    if backend == "celery" and source == "abandoned":
        return (
            "source=abandoned is RQ only: Celery keeps no started registry (with acks_late the broker "
            "redelivers a killed worker's tasks itself)"
        )
    if source == "queue":
        if not params["from_queue"] or not params["to_queue"]:
            return "source=queue needs from_queue and to_queue"
        if params["from_queue"] == params["to_queue"]:
            return "from_queue and to_queue are the same queue"
        if params["failed_by"] or params["since"] or params["task_names"]:
            return "failed_by, since and task_names select failed or abandoned tasks; source=queue moves everything"
    elif backend == "rq" and not params["queues"]:
        return f"source={source} needs queues (the RQ queues whose registries are read)"
    return None


def _replay(module: AnsibleModule, client, selection: Selection):
    params = module.params
    if params["backend"] == "rq":
        return rq_backend.replay(
            client,
            source=params["source"],
            queues=params["queues"],
            selection=selection,
            to_queue=params["to_queue"],
            from_queue=params["from_queue"],
            heartbeat_timeout=params["heartbeat_timeout"],
            check_mode=module.check_mode,
        )
    if params["source"] == "queue":
        return celery_backend.move_queue(
            client, params["from_queue"], params["to_queue"], limit=params["limit"], check_mode=module.check_mode
        )
    require_celery(module)
    with celery_backend.opened_app(params) as app:
        report = celery_backend.replay(
            client,
            app,
            queues=params["queues"],
            selection=selection,
            to_queue=params["to_queue"],
            check_mode=module.check_mode,
        )
    unreplayable = report.skipped.get(celery_backend.RESULT_EXTENDED_OFF)
    if unreplayable:
        module.warn(
            f"{unreplayable} failed task(s) cannot be replayed: their results hold no "
            "task name or arguments because result_extended is off in the Celery app; set result_extended=True"
        )
    return report


def run_module() -> None:
    module = new_module(OPTIONS, problem=_problem)
    params = module.params
    try:
        selection = Selection(
            failed_by=params["failed_by"],
            pool=params["pool"],
            since=parse_since(params["since"]),
            task_names=params["task_names"],
            limit=params["limit"],
        )
    except InvalidFilter as exc:
        module.fail_json(msg=str(exc))

    client = connect(module)
    with failing_in_words(module, f"replay {params['source']} {params['backend']} tasks", unexpected=True):
        report = _replay(module, client, selection)

    where = params["to_queue"] or "their own queues"
    result: dict[str, Any] = {
        "changed": report.replayed > 0,
        "replayed": report.replayed,
        "ids": report.ids,
        "sources": {report.name: report.as_dict()},
        "filters": selection.describe(),
        "msg": f"{'would replay' if module.check_mode else 'replayed'} {report.replayed} {params['source']} "
        f"{params['backend']} task(s) onto {where}",
    }
    if module._diff:
        result["diff"] = {
            "before": f"{params['source']}: {report.selected} task(s) to replay\n",
            "after": f"{params['source']}: {report.selected - report.replayed} task(s) to replay\n",
        }
    if report.replayed and not module.check_mode:
        record_or_warn(
            module,
            client,
            "task_requeue",
            "replayed",
            backend=params["backend"],
            source=params["source"],
            replayed=report.replayed,
            to_queue=params["to_queue"],
            filters=selection.describe(),
            ids=report.ids[:100],
        )
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
