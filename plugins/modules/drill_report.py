#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: drill_report
short_description: The report of a rollback drill, as JSON and as a self-contained HTML page with its timeline
version_added: 0.2.0
author: queueops.rollback maintainers (@queueops)
description:
  - Ends a rollback drill (C(playbooks/drill.yml)). It stops the M(queueops.rollback.queue_sampler) that ran
    beside it, counts the tasks, reads the collection's events of the drill and the timeline callback's
    record, and writes C(report.json) and C(report.html) to O(dest).
  - The report holds the releases; the time to detect (from the bad release's first task to the health
    gate's verdict) and the time to recover (from the verdict until every one of O(workers_expected) workers
    consumes on O(good_release)); the tasks enqueued, finished, failed by the bad release, replayed, lost
    and duplicated; the release of every host; and a one-line verdict. The drill passes when no task was
    lost, every host of O(fleet) runs O(good_release), no queue was left paused and the deploy rolled back
    by itself.
  - Exact counts and times need a task ledger in Redis, kept by the task code (the collection's sample app
    keeps one) - C(queueops:ledger:enqueued) (set of task tokens, written by the producer before it
    enqueues), C(queueops:ledger:done) and C(queueops:ledger:failed) (hashes token to runs) and
    C(queueops:ledger:starts) (list of JSON objects with C(token), C(release), C(worker), C(t)). Without one
    the counts are reported unknown and the time to recover comes from the timeline callback (the
    rollback's wait).
  - The HTML page needs no network (CSS, script and data inline); it draws the queue depth, the tasks
    finished and failed per second, each phase of the deploy per host as a band (from the
    C(queueops.rollback.timeline) callback's record, O(timeline)) and the gate's verdict.
  - Runs on the controller (delegated). Counting waits up to O(settle_timeout) for the tasks still queued.
extends_documentation_fragment:
  - queueops.rollback.backend
  - queueops.rollback.redis
  - queueops.rollback.attributes
options:
  queues:
    description: The pool's queues.
    type: list
    elements: str
    required: true
  pool:
    description: The pool drilled.
    type: str
    required: true
  good_release:
    description: The release the fleet must end on.
    type: str
    required: true
  bad_release:
    description: The release deployed to fail.
    type: str
    required: true
  started:
    description: When the drill began (epoch seconds); events and ledger entries before it are not counted.
    type: float
    required: true
  fleet:
    description:
      - One entry per host, C(host) and C(current) (the release it runs) and, when known, C(paused) (true when
        it saw a queue of the pool paused).
    type: list
    elements: dict
    required: true
  rolled_back:
    description: Whether the deploy of O(bad_release) failed and rolled back by itself.
    type: bool
    required: true
  deploy_message:
    description: What the deploy said when it rolled back.
    type: str
  workers_expected:
    description: Workers of O(good_release) the fleet runs once recovered (hosts x instances); 0 when unknown.
    type: int
    default: 0
  samples:
    description: The samples file of the M(queueops.rollback.queue_sampler) that ran beside the drill.
    type: path
  stop_file:
    description: The sampler's stop file. Default O(samples) with C(.stop) appended.
    type: path
  timeline:
    description: The record of the C(queueops.rollback.timeline) callback, when it was enabled for the run.
    type: path
  dest:
    description: Directory the report is written to.
    type: path
    required: true
  load_stop_key:
    description:
      - A Redis key set before counting, to stop a load generator that watches it (the collection's sandbox
        load generator watches C(queueops:loadgen:stop)). Unset, nothing is written to Redis.
    type: str
  settle_timeout:
    description: Seconds to wait for the tasks still queued to finish before the ones missing count as lost.
    type: float
    default: 60
  awx:
    description: The AWX job (C(job_id), C(user), C(template)) the drill ran as, for the report.
    type: dict
attributes:
  check_mode:
    support: none
    details: It writes the report.
  diff_mode:
    support: none
notes:
  - "Redis ACL: C(+ping +xrange +exists +smembers +hgetall +lrange ~queueops:events ~queueops:ledger:*), and C(+set)
    on O(load_stop_key) when it is given."
seealso:
  - module: queueops.rollback.queue_sampler
"""

EXAMPLES = r"""
- name: Write the drill's report
  queueops.rollback.drill_report:
    backend: rq
    queues: [orders]
    pool: orders
    good_release: 1.0.0
    bad_release: 1.2.0
    started: "{{ drill_started }}"
    fleet: "{{ drill_fleet }}"
    rolled_back: true
    workers_expected: 6
    samples: /tmp/drill/samples.jsonl
    dest: /tmp/drill
    redis_url: "{{ redis_url }}"
  delegate_to: localhost
  register: drill
"""

RETURN = r"""
passed:
  description: Whether the drill passed (see the description).
  returned: always
  type: bool
  sample: true
verdict:
  description: The one-line verdict.
  returned: always
  type: str
  sample: "PASSED: 1.2.0 was caught by the health gate 9.1 s after its first task and the fleet is back on 1.0.0"
text:
  description: The report as a few lines of text, to print.
  returned: always
  type: str
  sample: "Rollback drill of pool shop (rq): 1.0.0 -> 1.2.0 -> back to 1.0.0"
report:
  description: The report without its samples (they are in the files).
  returned: always
  type: dict
  sample: {"passed": true, "times": {"detect_s": 9.1, "recover_s": 3.4}, "tasks": {"lost": 0}}
paths:
  description: The files written.
  returned: always
  type: dict
  sample: {"json": /tmp/drill/report.json, "html": /tmp/drill/report.html}
"""

import json
import os
import time
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils import drill
from ansible_collections.queueops.rollback.plugins.module_utils.module_kit import (
    BACKEND_OPTION,
    failing_in_words,
    new_module,
)
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import connect

OPTIONS: dict[str, dict[str, Any]] = {
    "backend": BACKEND_OPTION,
    "queues": {"type": "list", "elements": "str", "required": True},
    "pool": {"type": "str", "required": True},
    "good_release": {"type": "str", "required": True},
    "bad_release": {"type": "str", "required": True},
    "started": {"type": "float", "required": True},
    "fleet": {"type": "list", "elements": "dict", "required": True},
    "rolled_back": {"type": "bool", "required": True},
    "deploy_message": {"type": "str"},
    "workers_expected": {"type": "int", "default": 0},
    "samples": {"type": "path"},
    "stop_file": {"type": "path"},
    "timeline": {"type": "path"},
    "dest": {"type": "path", "required": True},
    "load_stop_key": {"type": "str", "no_log": False},
    "settle_timeout": {"type": "float", "default": 60.0},
    "awx": {"type": "dict"},
}


def _stop_sampler(samples: str | None, stop_file: str | None) -> list[dict]:
    if not samples:
        return []
    stop = stop_file or f"{samples}.stop"
    with open(stop, "w", encoding="utf-8"):
        pass
    deadline = time.monotonic() + 5
    while True:
        found, ended = drill.read_samples(samples)
        if ended or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _timeline(path: str | None) -> dict | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def run_module() -> None:
    module = new_module(OPTIONS, supports_check_mode=False)
    p = module.params
    client = connect(module)
    with failing_in_words(module, "write the drill's report", unexpected=True):
        samples = _stop_sampler(p["samples"], p["stop_file"])
        counts = None
        if drill.has_ledger(client):
            if p["load_stop_key"]:
                client.set(p["load_stop_key"], 1)
            counts = drill.settle_ledger(client, p["settle_timeout"])
        now = time.time()
        report = drill.build_report(
            params=p,
            samples=samples,
            events=drill.read_events(client, p["started"] - 1, now),
            counts=counts,
            starts=drill.ledger_starts(client, p["started"]) if counts else [],
            timeline=_timeline(p["timeline"]),
            fleet=p["fleet"],
            finished_at=now,
        )
        paths = drill.write_report(report, p["dest"])
    brief = {key: value for key, value in report.items() if key not in ("samples", "events")}
    module.exit_json(
        changed=True,
        passed=report["passed"],
        verdict=report["verdict"],
        text=drill.text_report(report),
        report=brief,
        paths=paths,
    )


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
