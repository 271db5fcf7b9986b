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
    O(ttl) makes the key expire, so a playbook that dies cannot leave the workers suspended.
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
extends_documentation_fragment:
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.all
options:
  backend:
    description: The worker framework.
    type: str
    required: true
    choices: [rq, celery]
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
  reply_timeout:
    description: Celery only. Seconds to wait for the answers to a broadcast.
    type: float
    default: 1.0
  settle_timeout:
    description:
      - RQ, seconds to wait until no worker of O(queues) is idle in its dequeue (the pause is then proven).
      - Celery, seconds to wait for tasks that workers prefetched before the pause to start; those still
        waiting then are returned in RV(prefetched_pending) with a warning (Celery cannot take them back).
    type: float
    default: 10
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
suspension_ttl:
  description: RQ. Seconds left before C(rq:suspended) expires; null when it does not expire or is not set.
  returned: backend is rq
  type: int
woken_workers:
  description: RQ. Idle workers handed a no-op job so that they read the suspension at once.
  returned: backend is rq and state is not resumed
  type: list
  elements: str
workers:
  description: Celery. Node name to the queues it consumes after the change (nodes that answered).
  returned: backend is celery
  type: dict
prefetched_pending:
  description:
    - Celery, O(state=paused) or O(state=drained). Tasks of O(queues) that workers had prefetched before
      the pause and that had not started after O(settle_timeout); they start once their worker has a free
      slot (a warning says so). Empty when the pause holds for every task.
  returned: backend is celery and the queues were paused by this run
  type: list
  elements: dict
missing_workers:
  description: Celery. Workers that did not answer.
  returned: backend is celery
  type: list
  elements: str
in_flight_at_start:
  description: O(state=drained). Number of tasks in flight when the drain started.
  returned: state is drained
  type: int
in_flight_at_start_tasks:
  description: O(state=drained). Those tasks (id, queue, worker).
  returned: state is drained
  type: list
  elements: dict
left:
  description: O(state=drained). Number of tasks still in flight at the end (0 when drained).
  returned: state is drained
  type: int
stragglers:
  description: O(state=drained). Tasks still in flight at the end, with C(job_id) or C(id), C(queue) and C(worker).
  returned: state is drained
  type: list
  elements: dict
abandoned:
  description:
    - RQ, O(state=drained). Jobs left in the started registries of O(queues) by workers that are gone
      (killed; their worker hash expired or marked dead, or no Redis connection named after them). Nothing
      will finish them, so the drain does not wait for them; C(queueops.rollback.task_requeue) replays them.
    - Same fields as RV(stragglers).
  returned: backend is rq and state is drained
  type: list
  elements: dict
elapsed:
  description: O(state=drained). Seconds the drain waited.
  returned: state is drained
  type: float
"""

import time
from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.queueops.rollback.plugins.module_utils import celery_backend, rq_backend
from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    REDIS_MUTUALLY_EXCLUSIVE,
    REDIS_REQUIRED_TOGETHER,
    connect,
    redis_argument_spec,
)

MODULE = "queue_pause"


def _argument_spec() -> dict[str, Any]:
    return redis_argument_spec(
        backend={"type": "str", "required": True, "choices": ["rq", "celery"]},
        queues={"type": "list", "elements": "str", "required": True},
        state={"type": "str", "default": "paused", "choices": ["paused", "resumed", "drained"]},
        timeout={"type": "float", "default": 300},
        ttl={"type": "int"},
        workers={"type": "list", "elements": "str"},
        allow_missing_workers={"type": "bool", "default": False},
        reply_timeout={"type": "float", "default": 1.0},
        settle_timeout={"type": "float", "default": 10},
    )


def _validate(module: AnsibleModule) -> list[str]:
    p = module.params
    queues = [q.strip() if isinstance(q, str) else q for q in p["queues"] or []]
    if not queues:
        module.fail_json(msg="queues must name at least one queue")
    bad = [q for q in queues if not q or any(c.isspace() for c in q)]
    if bad:
        module.fail_json(msg=f"queue names must be non-empty and without spaces: {bad!r}")
    if p["ttl"] is not None and p["ttl"] <= 0:
        module.fail_json(msg=f"ttl must be a positive number of seconds, got {p['ttl']}")
    if p["timeout"] < 0 or p["reply_timeout"] <= 0 or p["settle_timeout"] <= 0:
        module.fail_json(msg="timeout must be >= 0, reply_timeout and settle_timeout > 0")
    if p["backend"] == "celery" and p["ttl"] is not None:
        module.fail_json(msg="ttl is RQ only: a Celery pause lives in the workers' memory and has no expiry")
    if p["backend"] == "rq" and p["workers"]:
        module.fail_json(msg="workers is Celery only: an RQ pause (rq:suspended) applies to every worker")
    return list(dict.fromkeys(queues))


def _drain(result: dict[str, Any], in_flight: Callable[[], list], timeout: float, check_mode: bool) -> None:
    """Poll ``in_flight()`` until empty or ``timeout``; fills the drain fields of ``result``.

    In check mode it looks once and waits for nothing.
    """
    start = time.monotonic()
    first = in_flight()
    current = first
    while current and not check_mode and time.monotonic() - start < timeout:
        time.sleep(0.05)
        current = in_flight()
    result.update(
        in_flight_at_start=len(first),
        in_flight_at_start_tasks=first,
        left=len(current),
        stragglers=current,
        elapsed=0.0 if check_mode else round(time.monotonic() - start, 3),
    )


def _straggler_msg(queues: list[str], result: dict[str, Any], timeout: float) -> str:
    names = ", ".join(
        f"{t.get('job_id') or t.get('id')} on {t.get('worker') or 'unknown worker'}" for t in result["stragglers"]
    )
    left = result["left"]
    return f"queues {', '.join(queues)} not drained after {timeout:g} s: {left} task(s) still running: {names}"


def _run_rq(module: AnsibleModule, client, queues: list[str]) -> dict[str, Any]:
    p = module.params
    state = p["state"]
    before = rq_backend.suspension(client)
    result: dict[str, Any] = {"changed": False}
    if state == "resumed":
        result["changed"] = before["suspended"]
        if before["suspended"] and not module.check_mode:
            rq_backend.resume(client)
        after_suspended = False
    else:
        result["changed"] = not before["suspended"]
        if not module.check_mode:
            if not before["suspended"]:
                rq_backend.suspend(client, p["ttl"])
            settled = rq_backend.settle_suspension(client, queues, timeout=p["settle_timeout"])
            result["woken_workers"] = settled["woken"]
            result["changed"] = result["changed"] or bool(settled["woken"])
            if settled["still_idle"]:
                module.fail_json(
                    msg=f"rq:suspended is set but workers {', '.join(settled['still_idle'])} still wait in their "
                    f"dequeue after {p['settle_timeout']:g} s: the pause is not proven for them",
                    **result,
                )
        else:
            result["woken_workers"] = []
        after_suspended = True
    now = rq_backend.suspension(client)
    result["suspension_ttl"] = now["ttl"] if not module.check_mode else (p["ttl"] if result["changed"] else now["ttl"])
    result["paused"] = queues if after_suspended else []
    result["diff"] = {
        "before": {q: "paused" if before["suspended"] else "consuming" for q in queues},
        "after": {q: "paused" if after_suspended else "consuming" for q in queues},
    }
    if state == "drained":
        abandoned: list[dict[str, Any]] = []

        def running() -> list:
            live, gone = rq_backend.split_in_flight(client, queues)
            abandoned[:] = [e.as_dict() for e in gone]
            return [e.as_dict() for e in live]

        _drain(result, running, p["timeout"], module.check_mode)
        result["abandoned"] = abandoned
    return result


def _run_celery(module: AnsibleModule, client, queues: list[str]) -> dict[str, Any]:
    if celery_backend.CELERY_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("celery"), exception=celery_backend.CELERY_IMPORT_ERROR)
    p = module.params
    app = celery_backend.make_app(p)
    try:
        return _celery_change(module, app, client, queues)
    finally:
        celery_backend.close_app(app)


def _celery_change(module: AnsibleModule, app, client, queues: list[str]) -> dict[str, Any]:
    p = module.params
    wanted, timeout = p["workers"], p["reply_timeout"]
    answered = celery_backend.consumers(app, wanted, timeout)
    records = celery_backend.paused_records(client, queues)
    missing = sorted(set(wanted or []) - set(answered))
    if missing and not p["allow_missing_workers"]:
        module.fail_json(
            msg=f"Celery workers {', '.join(missing)} did not answer within {timeout:g} s; nothing changed "
            "(set allow_missing_workers to act on the others)",
            missing_workers=missing,
            changed=False,
        )
    resume = p["state"] == "resumed"
    plan: dict[str, list[str]] = {}
    for queue in queues:
        if resume:
            targets = records.get(queue) or wanted or []
            if wanted:
                targets = [n for n in targets if n in wanted]
            missing += [n for n in targets if n not in answered and n not in missing]
            plan[queue] = [n for n in targets if n in answered and queue not in answered[n]]
        else:
            plan[queue] = [n for n, consumed in answered.items() if queue in consumed]

    def kept(queue: str) -> list[str]:
        """After a resume, the record keeps the nodes not named by ``workers`` and those that did not answer."""
        return [n for n in records.get(queue, []) if n in missing or (wanted and n not in wanted)]

    changed = any(plan.values()) or (resume and any(kept(q) != n for q, n in records.items()))
    result: dict[str, Any] = {"changed": changed}
    if changed and not module.check_mode:
        for queue, nodes in plan.items():
            command = celery_backend.add_consumer if resume else celery_backend.cancel_consumer
            replies = command(app, queue, nodes, timeout)
            missing += [n for n in nodes if n not in replies and n not in missing]
            if resume:
                left_out = kept(queue)
                if left_out != records.get(queue, []):
                    celery_backend.forget_paused(client, queue)
                    if left_out:
                        celery_backend.record_paused(client, queue, left_out)
            elif nodes:
                celery_backend.record_paused(client, queue, [n for n in nodes if n in replies])
        after = celery_backend.consumers(app, sorted(answered), timeout)
        wrong = sorted(
            n
            for n, consumed in after.items()
            for q in queues
            if (q in consumed) != resume and (not resume or n in plan[q])
        )
        if wrong:
            module.fail_json(msg=f"after the broadcast, inspect active_queues still disagrees on {wrong}", **result)
        if not resume:
            prefetched = _wait_prefetched(app, queues, sorted(answered), timeout, p["settle_timeout"])
            result["prefetched_pending"] = prefetched
            if prefetched:
                waiting = ", ".join(f"{t['id']} on {t['worker']}" for t in prefetched)
                module.warn(
                    f"{len(prefetched)} task(s) of {', '.join(queues)} that workers prefetched before the pause "
                    f"had not started after {p['settle_timeout']:g} s and will start once their worker has a free "
                    f"slot: {waiting}. Use state=drained to "
                    "wait for them, or worker_prefetch_multiplier=1 with task_acks_late to keep workers from "
                    "prefetching"
                )
    else:
        after = {n: sorted(set(c) - set(queues)) if not resume else c for n, c in answered.items()}
        if resume:
            after = {n: sorted(set(c) | {q for q, ns in plan.items() if n in ns}) for n, c in answered.items()}
    result["workers"] = after
    result["missing_workers"] = sorted(missing)
    # With ``workers``, the others still consume what they consumed: a queue is paused only if none does.
    others = {}
    if wanted:
        others = {n: c for n, c in celery_backend.consumers(app, None, timeout).items() if n not in answered}
    seen_before, seen_after = [*answered.values(), *others.values()], [*after.values(), *others.values()]
    result["paused"] = [q for q in queues if not any(q in c for c in seen_after)]
    result["diff"] = {
        "before": {q: "consuming" if any(q in c for c in seen_before) else "paused" for q in queues},
        "after": {q: "paused" if q in result["paused"] else "consuming" for q in queues},
    }
    if missing and not p["allow_missing_workers"]:
        module.fail_json(msg=f"Celery workers {', '.join(sorted(missing))} did not answer the broadcast", **result)
    if p["state"] == "drained":
        nodes = sorted(answered) or None

        def in_flight() -> list:
            return celery_backend.in_flight(app, client, queues, nodes, timeout)

        _drain(result, in_flight, p["timeout"], module.check_mode)
    return result


def _wait_prefetched(app, queues: list[str], nodes: list[str], timeout: float, limit: float) -> list[dict]:
    """Tasks a worker prefetched before the cancel still start; wait up to ``limit`` for them to.

    Returns those still waiting in a worker's buffer: Celery cannot take them back, so they will start
    after the module returns, once their worker has a free slot.
    """
    deadline = time.monotonic() + limit
    pending: list[dict] = []
    while nodes:
        pending = [t for t in celery_backend.worker_tasks(app, queues, nodes, timeout) if t["state"] == "reserved"]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return pending


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=_argument_spec(),
        mutually_exclusive=REDIS_MUTUALLY_EXCLUSIVE,
        required_together=REDIS_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    queues = _validate(module)
    client = connect(module)
    p = module.params
    run = _run_rq if p["backend"] == "rq" else _run_celery
    result = run(module, client, queues)
    diff = result.pop("diff")
    if module._diff and result["changed"]:
        result["diff"] = diff
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
