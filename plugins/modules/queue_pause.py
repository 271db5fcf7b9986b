#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: queue_pause
short_description: Pause, drain and resume the consumption of RQ or Celery queues
version_added: 0.1.0
author: queueops.rollback maintainers (@queueops)
description:
  - Stops the consumption of queues so that, once the module returns, no task starts on them; tasks
    already running finish. Waits for them (O(state=drained)) and gives the queues back (O(state=resumed)).
  - Needs only the Redis connection and the C(redis) library (plus C(celery) and C(kombu) for Celery)
    where it runs, not the application's code.
  - B(RQ) pauses with the C(rq:suspended) key, the one C(rq suspend) sets. It is B(global to the Redis
    database); every RQ worker of that database stops taking jobs, not only those of O(queues).
    O(ttl) makes the key expire, so a playbook that dies cannot leave the workers suspended. RV(also_paused)
    names the other queues and workers the suspension stops, and a warning says so.
  - B(rq worker refuses to start while C(rq:suspended) is set) (it exits 1 with "RQ is currently suspended"). A
    deploy that pauses, stops the old workers and starts new ones must resume before it starts them (the
    workers are stopped then, so nothing starts in between); the module warns when the db is paused and no
    RQ worker is left running. The roles of this collection order their steps that way.
  - RQ workers idle in their blocking dequeue (BLPOP/BLMOVE) read the key only after they have taken and
    run one more job (a dequeue timeout or C(CLIENT UNBLOCK) only makes them block again, or quit). So
    the module hands each idle
    worker of O(queues) one no-op job (C(time.time), result TTL 0) at the head of its queue; the worker
    runs it, reads C(rq:suspended) and stops. The module returns when no worker of O(queues) is idle.
    The no-op job uses RQ's default pickle serializer.
  - B(Celery) pauses with C(cancel_consumer) broadcasts (replies collected), verified with
    C(inspect active_queues), and resumes with C(add_consumer) to the workers the pause took the
    queue from (remembered in the Redis hash C(queueops:celery:paused)). This is in memory only; a
    worker restarted while paused consumes its C(-Q) queues again.
  - A worker the pause record names that has stopped is forgotten and listed in RV(forgotten_workers), not
    waited for, because every deploy restarts workers and the release is part of their node names. It has
    stopped when it does not answer and either its remote-control mailbox C(<node>.celery.pidbox) is gone from
    the broker (as after a warm shutdown) or its unit on that host answers as another release (node
    C(<pool>:<other version>:<index>@<host>)), because a worker that stops while Redis is away, in a failover or
    a restart, cannot remove its mailbox. RV(paused) and the diff always come from what the live workers consume.
  - A queue nobody knows (RQ, no jobs, no registries and no worker; Celery, no live consumer, no message,
    no binding and no pause record) is refused, since it is most often a typo; see O(allow_unknown_queues).
extends_documentation_fragment:
  - queueops.rollback.backend
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
options:
  queues:
    description: Names of the queues. At least one.
    type: list
    elements: str
    required: true
  state:
    description:
      - V(paused) stops consumption; V(resumed) restores it; V(drained) pauses if needed, then waits until
        nothing is in flight on O(queues) (RQ started registries, less the jobs of workers that are gone, see
        RV(abandoned); Celery active, reserved and unacked tasks).
    type: str
    choices: [paused, resumed, drained]
    default: paused
  timeout:
    description: With O(state=drained), seconds to wait; then the task fails and lists the stragglers.
    type: float
    default: 300
  ttl:
    description:
      - RQ only. Seconds after which the suspension expires by itself. Pausing what is already paused
        leaves its expiry as it is.
    type: int
  workers:
    description:
      - Celery only. Node names (C(name@host)) to pause or resume; all workers that answer by default.
      - Named workers that do not answer fail the task unless O(allow_missing_workers).
    type: list
    elements: str
  allow_missing_workers:
    description: Celery only. Report workers that did not answer instead of failing.
    type: bool
    default: false
  allow_unknown_queues:
    description:
      - Pause or resume queues that nothing in Redis knows yet instead of failing. An RQ pause of such a
        queue still suspends every RQ worker of the db.
    type: bool
    default: false
  reply_timeout:
    description:
      - Celery only. Seconds to wait for the answers to a broadcast.
      - Asked of every worker, the wait ends once as many answered as have a remote-control mailbox on the
        broker (C(_kombu.binding.celery.pidbox)), and takes the whole timeout only while a killed worker's
        mailbox is left there.
    type: float
    default: 1.0
  settle_timeout:
    description:
      - RQ, seconds to wait until no worker of O(queues) is idle in its dequeue (the pause is then proven).
      - Celery, seconds to wait for tasks that workers prefetched before the pause to start; those still
        waiting then are returned in RV(prefetched_pending) with a warning (Celery cannot take them back).
    type: float
    default: 10
notes:
  - "Redis ACL (rq): the user needs C(+ping +client|list +smembers +hgetall +exists +ttl +llen +zrange +hmget +set
    +del +expire +multi +exec +hset +lpush +lrem +zrem +xadd ~rq:* ~queueops:events). C(+client|list) finds the
    workers waiting in their dequeue and tells a live worker from a killed one (refused, the module goes by
    heartbeats only); the writes are C(rq:suspended), the wake-up jobs and the event."
  - "Redis ACL (celery): the user needs C(+ping +multi +exec +llen +sadd +srem +del +brpop +publish +set +get
    +evalsha +script|load +zrevrangebyscore +scan +smembers +hgetall +hset +hdel +xadd ~*.reply.celery.pidbox*
    ~unacked_mutex ~unacked_index ~queueops:celery:paused %R~_kombu.binding.* %R~unacked %R~<queue>*
    ~queueops:events &/<db>.celery.pidbox). C(<queue>) stands for each of O(queues). The pause records are the hash
    C(queueops:celery:paused); C(_kombu.binding.*) tells queues and workers the broker knows; C(unacked) is read by
    O(state=drained). The Celery rules hold the remote control every Celery client uses: broadcasts published on the
    channel C(/<db>.celery.pidbox) (C(<db>) is the database number), replies read from a list
    C(<uuid>.reply.celery.pidbox) the client declares and deletes, and kombu's C(unacked_mutex) lock and
    C(unacked_index) read when it starts consuming."
"""

EXAMPLES = r"""
- name: Pause queues orders and emails before switching releases (resume by itself after 30 minutes)
  queueops.rollback.queue_pause:
    backend: rq
    queues: [orders, emails]
    state: paused
    ttl: 1800
    redis_url: "{{ redis_url }}"

- name: Wait until the running tasks of orders are done
  queueops.rollback.queue_pause:
    backend: celery
    queues: [orders]
    state: drained
    timeout: 120
    redis_host: redis.internal

- name: Give the queues back to their workers
  queueops.rollback.queue_pause:
    backend: celery
    queues: [orders]
    state: resumed
    redis_host: redis.internal
"""

RETURN = r"""
paused:
  description:
    - Queues paused when the module returned.
    - Celery, with O(workers), a queue that other workers still consume is not paused (and not listed).
  returned: always
  type: list
  elements: str
  sample: ["orders", "emails"]
suspension_ttl:
  description: RQ. Seconds left before C(rq:suspended) expires; null when it does not expire or is not set.
  returned: backend is rq
  type: int
  sample: 1790
woken_workers:
  description: RQ. Idle workers handed a no-op job so that they read the suspension at once.
  returned: backend is rq and state is not resumed
  type: list
  elements: str
  sample: ["orders:2.4.1:1"]
also_paused:
  description:
    - RQ. What the suspension stops beyond O(queues), since it is global to the Redis db - C(queues), other
      queues with a live worker or waiting jobs, and C(workers), live workers that consume none of O(queues).
  returned: backend is rq and state is not resumed
  type: dict
  sample: {"queues": ["emails"], "workers": ["mail:1.0.0:1"]}
also_resumed:
  description: RQ. The same for a resume - what deleting C(rq:suspended) gives back beyond O(queues).
  returned: backend is rq and state is resumed
  type: dict
  sample: {"queues": [], "workers": []}
forgotten_workers:
  description:
    - Celery. Workers the pause record named that have stopped (no answer, and no mailbox on the broker or
      their unit answering as another release); their record was removed.
  returned: backend is celery
  type: list
  elements: str
  sample: ["orders:2.4.0:1@web-1"]
workers:
  description: Celery. Node name to the queues it consumes after the change (nodes that answered).
  returned: backend is celery
  type: dict
  sample: {"orders:2.4.1:1@web-1": []}
prefetched_pending:
  description:
    - Celery, O(state=paused) or O(state=drained). Tasks of O(queues) that workers had prefetched before
      the pause and that had not started after O(settle_timeout); they start once their worker has a free
      slot (a warning says so). Empty when the pause holds for every task.
  returned: backend is celery and the queues were paused by this run
  type: list
  elements: dict
  sample: [{"id": "0c1b", "name": "orders.charge", "queue": "orders", "worker": "orders:2.4.1:1@web-1",
            "state": "reserved"}]
missing_workers:
  description: Celery. Workers that did not answer.
  returned: backend is celery
  type: list
  elements: str
  sample: []
in_flight_at_start:
  description: O(state=drained). Number of tasks in flight when the drain started.
  returned: state is drained
  type: int
  sample: 3
in_flight_at_start_tasks:
  description: O(state=drained). Those tasks (id, queue, worker).
  returned: state is drained
  type: list
  elements: dict
  sample: [{"job_id": "5f0c", "queue": "orders", "worker": "orders:2.4.1:web-1-1"}]
left:
  description: O(state=drained). Number of tasks still in flight at the end (0 when drained).
  returned: state is drained
  type: int
  sample: 0
stragglers:
  description: O(state=drained). Tasks still in flight at the end, with C(job_id) or C(id), C(queue) and C(worker).
  returned: state is drained
  type: list
  elements: dict
  sample: []
abandoned:
  description:
    - RQ, O(state=drained). Jobs left in the started registries of O(queues) by workers that are gone
      (killed; their worker hash expired or marked dead, or no Redis connection named after them). Nothing
      will finish them, so the drain does not wait for them; C(queueops.rollback.task_requeue) replays them.
    - Same fields as RV(stragglers).
  returned: backend is rq and state is drained
  type: list
  elements: dict
  sample: [{"job_id": "77aa", "queue": "orders", "worker": "orders:2.4.1:web-2-1", "reason": "its worker is gone"}]
elapsed:
  description: O(state=drained). Seconds the drain waited.
  returned: state is drained
  type: float
  sample: 1.42
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
from ansible_collections.queueops.rollback.plugins.module_utils.pausing import PauseError, PauseOutcome, drain
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect

MODULE = "queue_pause"


OPTIONS: dict[str, dict[str, Any]] = {
    "backend": BACKEND_OPTION,
    "queues": {"type": "list", "elements": "str", "required": True},
    "state": {"type": "str", "default": "paused", "choices": ["paused", "resumed", "drained"]},
    "timeout": {"type": "float", "default": 300},
    "ttl": {"type": "int"},
    "workers": {"type": "list", "elements": "str"},
    "allow_missing_workers": {"type": "bool", "default": False},
    "allow_unknown_queues": {"type": "bool", "default": False},
    "reply_timeout": {"type": "float", "default": 1.0},
    "settle_timeout": {"type": "float", "default": 10},
}


def _problem(p: dict[str, Any]) -> str | None:
    """What makes this combination of options unusable, in words (each option is checked by its rule)."""
    if not p["queues"]:
        return "queues must name at least one queue"
    if p["backend"] == "celery" and p["ttl"] is not None:
        return "ttl is RQ only: a Celery pause lives in the workers' memory and has no expiry"
    if p["backend"] == "rq" and p["workers"]:
        return "workers is Celery only: an RQ pause (rq:suspended) applies to every worker"
    return None


def _straggler_msg(queues: list[str], result: dict[str, Any], timeout: float) -> str:
    names = ", ".join(
        f"{t.get('job_id') or t.get('id')} on {t.get('worker') or 'unknown worker'}" for t in result["stragglers"]
    )
    left = result["left"]
    return f"queues {', '.join(queues)} not drained after {timeout:g} s: {left} task(s) still running: {names}"


def _run_rq(module: AnsibleModule, client, queues: list[str]) -> dict[str, Any]:
    p = module.params
    if p["state"] == "resumed":
        outcome = rq_backend.resume_queues(
            client, queues, allow_unknown=p["allow_unknown_queues"], check_mode=module.check_mode
        )
        return _shaped(module, outcome)
    outcome = rq_backend.pause_queues(
        client,
        queues,
        ttl=p["ttl"],
        settle_timeout=p["settle_timeout"],
        allow_unknown=p["allow_unknown_queues"],
        check_mode=module.check_mode,
    )
    result = _shaped(module, outcome)
    if p["state"] == "drained":
        abandoned: list[dict[str, Any]] = []

        def running() -> list:
            live, gone = rq_backend.split_in_flight(client, queues)
            abandoned[:] = [e.as_dict() for e in gone]
            return [e.as_dict() for e in live]

        result.update(drain(running, p["timeout"], module.check_mode), abandoned=abandoned)
    return result


def _run_celery(module: AnsibleModule, client, queues: list[str]) -> dict[str, Any]:
    require_celery(module)
    p = module.params
    common = {
        "workers": p["workers"],
        "reply_timeout": p["reply_timeout"],
        "allow_missing": p["allow_missing_workers"],
        "allow_unknown": p["allow_unknown_queues"],
        "check_mode": module.check_mode,
    }
    with celery_backend.opened_app(p) as app:
        if p["state"] == "resumed":
            return _shaped(module, celery_backend.resume_queues(app, client, queues, **common))
        outcome = celery_backend.pause_queues(app, client, queues, settle_timeout=p["settle_timeout"], **common)
        result = _shaped(module, outcome)
        if p["state"] == "drained":
            nodes = sorted(outcome.details["workers"]) or None

            def in_flight() -> list:
                return celery_backend.in_flight(app, client, queues, nodes, p["reply_timeout"])

            result.update(drain(in_flight, p["timeout"], module.check_mode))
        return result


def _shaped(module: AnsibleModule, outcome: PauseOutcome) -> dict[str, Any]:
    for warning in outcome.warnings:
        module.warn(warning)
    result = outcome.result()
    if module._diff and outcome.changed:
        result["diff"] = {"before": outcome.before, "after": outcome.after}
    return result


def run_module() -> None:
    module = new_module(OPTIONS, problem=_problem)
    p = module.params
    queues = p["queues"]
    client = connect(module)
    run = _run_rq if p["backend"] == "rq" else _run_celery
    verb = {"paused": "pause", "resumed": "resume", "drained": "pause and drain"}[p["state"]]
    with failing_in_words(module, f"{verb} the {p['backend']} queues {', '.join(queues)}"):
        try:
            result = run(module, client, queues)
        except PauseError as exc:
            module.fail_json(msg=str(exc), changed=exc.changed, **exc.fields)
        result.update(backend=p["backend"], queues=queues, state=p["state"])
        if result["changed"] and not module.check_mode:
            action = "resumed" if p["state"] == "resumed" else "paused"
            record_or_warn(module, client, MODULE, action, backend=p["backend"], queues=queues, ttl=p["ttl"])
    drained_ok = p["state"] != "drained" or module.check_mode or result["left"] == 0
    if not drained_ok:
        module.fail_json(msg=_straggler_msg(queues, result, p["timeout"]), **result)
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
