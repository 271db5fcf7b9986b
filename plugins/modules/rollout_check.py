#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_check
short_description: Health gate for a worker release, from what its workers really did over a window
version_added: 0.1.0
author: queueops.rollback maintainers (@queueops)
description:
  - Observes the workers of one release for O(window) seconds and decides whether the release is
    healthy, unhealthy, or whether too few tasks ran to tell (inconclusive).
  - It counts the successes and failures of tasks run by workers of the release in the window, the live
    workers of the release at its end, and the backlog of O(queues) before and after.
  - "B(RQ): jobs of the finished and failed registries of O(queues) whose C(ended_at) falls in the window and
    whose C(worker_name) is a worker of the release; live workers are the registered workers whose hash has
    not expired and that still hold their named Redis connection (a killed worker's hash outlives it by
    minutes). Jobs enqueued with C(result_ttl=0) leave no finished entry and are not counted."
  - "B(Celery): C(task-succeeded) and C(task-failed) events whose C(hostname) is a worker of the release;
    the workers must send task events (started with C(-E), or C(worker_send_task_events=True)). Live
    workers are those answering C(ping) at the end of the window."
  - Fails the task when the release is unhealthy (unless O(fail_when_unhealthy=false)), so a role's
    C(rescue:) section can roll back. The result always carries the verdict, the reason in words and every
    number used. The verdict is also recorded in the C(queueops:events) stream (not in check mode).
  - "Worker identity convention: a worker's name (RQ C(--name)) or node name (Celery C(-n), before C(@host))
    is C(<pool>:<version>:<index>), for example C(orders:2.4.1:3); O(release) is matched against it."
extends_documentation_fragment:
  - queueops.rollback.backend
  - queueops.rollback.redis
  - queueops.rollback.attributes
  - queueops.rollback.attributes.info_module
options:
  queues:
    description: Queues the release consumes; their backlog is measured (and, for RQ, their registries read).
    type: list
    elements: str
    required: true
  release:
    description:
      - The release under observation, a version (workers named C(<pool>:<version>:<index>), narrowed to
        O(pool) when set), or, when it contains C(*), C(?) or C([), a shell-style pattern on worker names.
    type: str
    required: true
  pool:
    description: With a version in O(release), only workers of this pool.
    type: str
  window:
    description: Seconds to observe.
    type: float
    default: 60
  min_tasks:
    description: Fewer tasks than this in the window is inconclusive (the failure ratio is not judged).
    type: int
    default: 10
  max_failure_ratio:
    description: Unhealthy when more than this share (0 to 1) of the tasks failed, once O(min_tasks) ran.
    type: float
    default: 0.05
  max_failures:
    description: Unhealthy when more than this many tasks failed, whatever their share. No limit when unset.
    type: int
  min_workers:
    description: Unhealthy when fewer live workers of the release than this are seen.
    type: int
    default: 1
  max_backlog_growth:
    description: Unhealthy when the backlog of O(queues) grew by more than this many tasks. No limit when unset.
    type: int
  inconclusive_is:
    description: How an inconclusive verdict (too few tasks) counts for the gate.
    type: str
    default: fail
    choices: [pass, fail]
  fail_when_unhealthy:
    description: Fail the task when the gate does not pass. With V(false) the verdict is only returned.
    type: bool
    default: true
  halt_unhealthy:
    description:
      - When the gate does not pass, stop the release's workers at once, right after the verdict and
        before the task returns, so the bad release takes no more tasks milliseconds after it is judged
        rather than after the next tasks of the play. A warm stop of those workers only (RQ's
        C(shutdown) command on C(rq:pubsub:<worker>); Celery's C(shutdown) remote control sent to the
        release's nodes); what they run finishes, and other pools on the same Redis go on.
      - The workers exit cleanly, so systemd (C(Restart=on-failure)) does not start them again;
        something must start the release to go back to (the rollout role's rollback does, with
        M(queueops.rollback.worker_rollback)).
    type: bool
    default: false
  close_gates_unhealthy:
    description:
      - When the gate does not pass, close the feature gates of O(pool) that the release O(release) opened
        (M(queueops.rollback.feature_gate) with its O(queueops.rollback.feature_gate#module:version)), right after
        the verdict and before O(halt_unhealthy) stops any worker. The next task of every worker takes the old
        code path again, with no restart - the fastest rollback there is.
      - Needs O(pool) and a version (not a pattern) in O(release). Each gate closed is recorded as an event.
    type: bool
    default: false
  ping_timeout:
    description: Celery only; seconds to wait for the workers' ping replies.
    type: float
    default: 1.0
  broker_url:
    description:
      - Celery broker URL, when it is not the Redis given by the connection options. Never logged.
    type: str
notes:
  - The module observes; it changes nothing but the event stream (and, with O(halt_unhealthy), the bad release's
    workers, which it stops, and with O(close_gates_unhealthy), the release's feature gates, which it closes). In
    check mode it observes and judges
    the same way and records no event.
  - "Redis ACL (rq): the user needs C(+ping +client|list +smembers +hgetall +llen +zrangebyscore +hmget +xadd
    %R~rq:* ~queueops:events). Read-only but for the verdict's event. With O(halt_unhealthy), also C(+publish
    &rq:pubsub:*)."
  - "Redis ACL, with O(close_gates_unhealthy) (both backends): also C(+hgetall +hdel +watch +multi +exec
    ~queueops:gates:<pool>)."
  - "Redis ACL (celery): the user needs C(+ping +multi +exec +llen +sadd +srem +del +brpop +publish +set +get
    +evalsha +script|load +zrevrangebyscore +psubscribe +unsubscribe +xadd ~*.reply.celery.pidbox* ~unacked_mutex
    ~unacked_index ~celeryev.* ~_kombu.binding.celeryev %R~<queue>* ~queueops:events &/<db>.celery.pidbox
    &/<db>.celeryev/*). C(<queue>) stands for each of O(queues). The events are received by subscribing to the
    channel pattern C(/<db>.celeryev/*) with a queue C(celeryev.<uuid>) bound in C(_kombu.binding.celeryev); the
    live workers answer a ping broadcast. The Celery rules hold the remote control every Celery client uses:
    broadcasts published on the channel C(/<db>.celery.pidbox) (C(<db>) is the database number), replies read from a
    list C(<uuid>.reply.celery.pidbox) the client declares and deletes, and kombu's C(unacked_mutex) lock and
    C(unacked_index) read when it starts consuming."
seealso:
  - module: queueops.rollback.task_requeue
"""

EXAMPLES = r"""
- name: Watch orders 2.4.1 for two minutes before resuming the rollout
  queueops.rollback.rollout_check:
    backend: rq
    queues: [orders]
    release: "2.4.1"
    pool: orders
    window: 120
    min_tasks: 20
    max_failure_ratio: 0.02
    min_workers: 3
    redis_url: "{{ orders_redis_url }}"

- name: Gate a Celery canary by hostname pattern; a quiet queue counts as a pass
  queueops.rollback.rollout_check:
    backend: celery
    queues: [default]
    release: "emails:3.1.0:*@canary-*"
    window: 60
    inconclusive_is: pass
  register: gate
"""

RETURN = r"""
gates_closed:
  description: The feature gates closed by O(close_gates_unhealthy) (empty when the gate passed or it is off).
  returned: always
  type: list
  elements: str
  sample: [new_pricing]
halted:
  description: The workers told to stop by O(halt_unhealthy) (empty when the gate passed or it is off).
  returned: always
  type: list
  elements: str
  sample: ["orders:2.4.1:web-1-1-812", "orders:2.4.1:web-1-2-815"]
healthy:
  description: Whether the gate passes (an inconclusive verdict is mapped through O(inconclusive_is)).
  returned: always
  type: bool
  sample: false
verdict:
  description: C(healthy), C(unhealthy) or C(inconclusive).
  returned: always
  type: str
  sample: unhealthy
reason:
  description: The verdict in words, with the numbers and limits behind it.
  returned: always
  type: str
  sample: "release 2.4.1 is unhealthy: 10 of 30 tasks failed (33.3%), more than max_failure_ratio 5.0%"
reasons:
  description: Each failed check in words (empty when healthy).
  returned: always
  type: list
  elements: str
  sample: ["77 of 249 tasks failed (30.9%), more than max_failure_ratio 5.0%"]
numbers:
  description:
    - Everything measured - C(window), C(tasks), C(successes), C(failures), C(failure_ratio), C(live_workers),
      C(workers) (their names), C(backlog_before), C(backlog_after), C(backlog_growth) - and the C(thresholds).
  returned: always
  type: dict
  sample: {"successes": 172, "failures": 77, "live_workers": 6, "backlog_before": 84, "backlog_after": 0}
"""

import contextlib
from collections.abc import Iterator
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.queueops.rollback.plugins.module_utils import celery_backend, gates, rq_backend
from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn
from ansible_collections.queueops.rollback.plugins.module_utils.health import (
    Observation,
    Thresholds,
    judge,
)
from ansible_collections.queueops.rollback.plugins.module_utils.identity import (
    GLOB_CHARS,
    release_selector,
    release_spec_problem,
)
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import (
    BACKEND_OPTION,
    failing_in_words,
    new_module,
    require_celery,
)
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect

OPTIONS: dict[str, dict[str, Any]] = {
    "backend": BACKEND_OPTION,
    "queues": {"type": "list", "elements": "str", "required": True},
    "release": {"type": "str", "required": True},
    "pool": {"type": "str"},
    "window": {"type": "float", "default": 60},
    "min_tasks": {"type": "int", "default": 10},
    "max_failure_ratio": {"type": "float", "default": 0.05},
    "max_failures": {"type": "int"},
    "min_workers": {"type": "int", "default": 1},
    "max_backlog_growth": {"type": "int"},
    "inconclusive_is": {"type": "str", "default": "fail", "choices": ["pass", "fail"]},
    "fail_when_unhealthy": {"type": "bool", "default": True},
    "halt_unhealthy": {"type": "bool", "default": False},
    "close_gates_unhealthy": {"type": "bool", "default": False},
    "ping_timeout": {"type": "float", "default": 1.0},
    "broker_url": {"type": "str", "no_log": True},
}


@contextlib.contextmanager
def _celery_app(params: dict[str, Any]) -> Iterator[Any]:
    """The Celery app of the observation and of the halt (one broker connection for both, so the halt
    leaves at the verdict); None for RQ."""
    if params["backend"] != "celery":
        yield None
        return
    with celery_backend.opened_app(params) as app:
        yield app


def _observe(client, app, params: dict[str, Any], worker_ok) -> Observation:
    if app is None:
        return rq_backend.observe(client, params["queues"], worker_ok, params["window"])
    return celery_backend.observe(app, client, params["queues"], worker_ok, params["window"], params["ping_timeout"])


def _halt(client, app, workers: list[str]) -> list[str]:
    return rq_backend.halt_workers(client, workers) if app is None else celery_backend.halt_workers(app, workers)


def run_module() -> None:
    module = new_module(OPTIONS)
    params = module.params
    limits = Thresholds(
        min_tasks=params["min_tasks"],
        max_failure_ratio=params["max_failure_ratio"],
        max_failures=params["max_failures"],
        min_workers=params["min_workers"],
        max_backlog_growth=params["max_backlog_growth"],
        inconclusive_is=params["inconclusive_is"],
    )
    problems = limits.problems()
    if not params["queues"]:
        problems.append("queues must name at least one queue")
    if not params["release"].strip():
        problems.append("release must not be empty")
    release_problem = release_spec_problem("release", params["release"], params["pool"])
    if release_problem:
        problems.append(release_problem)
    if params["close_gates_unhealthy"] and (not params["pool"] or GLOB_CHARS.intersection(params["release"])):
        problems.append("close_gates_unhealthy needs pool and a version in release (the gates a release opened)")
    if problems:
        module.fail_json(msg="; ".join(problems))

    worker_ok = release_selector(params["release"], params["pool"])
    subject = f"release {params['release']}" + (f" of pool {params['pool']}" if params["pool"] else "")
    if params["backend"] == "celery":
        require_celery(module)
    client = connect(module)
    with _celery_app(params) as app:
        _judge_and_act(module, client, app, limits, worker_ok, subject)


def _judge_and_act(module: AnsibleModule, client, app, limits: Thresholds, worker_ok, subject: str) -> None:
    params = module.params
    with failing_in_words(module, f"observe {subject} on {params['backend']}", unexpected=True):
        observed = _observe(client, app, params, worker_ok)
    verdict = judge(observed, limits, subject)

    if not module.check_mode:
        record_or_warn(
            module,
            client,
            "rollout_check",
            verdict.status,
            backend=params["backend"],
            release=params["release"],
            pool=params["pool"],
            reason=verdict.reason,
            numbers=verdict.numbers,
        )
    closed: list[str] = []
    if not verdict.healthy and params["close_gates_unhealthy"]:
        with failing_in_words(module, f"close the feature gates of {subject}"):
            change = gates.close_gates(
                client, params["pool"], names=None, release=params["release"], check_mode=module.check_mode
            )
        gates.record_change(module, client, "rollout_check", params["pool"], change, params["release"])
        closed = change.closed
    halted = []
    if not verdict.healthy and params["halt_unhealthy"] and not module.check_mode:
        with failing_in_words(module, f"stop the workers of {subject}", unexpected=True):
            halted = _halt(client, app, observed.workers)
    result = dict(
        changed=bool(halted or closed),
        gates_closed=closed,
        halted=halted,
        healthy=verdict.healthy,
        verdict=verdict.status,
        reason=verdict.reason,
        reasons=verdict.reasons,
        numbers=verdict.numbers,
    )
    if not verdict.healthy and params["fail_when_unhealthy"]:
        module.fail_json(msg=verdict.reason, **result)
    result["msg"] = verdict.reason
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
