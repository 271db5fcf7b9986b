#!/usr/bin/python
# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: queue_sampler
short_description: Sample queue depth and task outcomes while a deploy or a drill runs
version_added: 0.2.0
author: queueops.rollback maintainers (@queueops)
description:
  - Every O(interval) seconds, writes one JSON line to O(path) with the time, the depth of each queue
    and the tasks started, finished and failed so far, until O(stop_file) exists or O(duration) passed;
    then a last line with the key C(end) (its time). The rollback drill (C(playbooks/drill.yml)) runs it with C(async)
    and C(poll=0) beside the deploy, and M(queueops.rollback.drill_report) draws its timeline from the file.
  - Task counts come from the task ledger when the task code keeps one (C(queueops:ledger:*), as the
    collection's sample app does; see M(queueops.rollback.drill_report)), else for RQ from the finished and
    failed registries (totals RQ still keeps, a trend only). For Celery without a ledger only the depth is known.
  - Read-only on Redis. O(path) is truncated at the start.
extends_documentation_fragment:
  - queueops.rollback.backend
  - queueops.rollback.redis
  - queueops.rollback.attributes
options:
  queues:
    description: The queues whose depth is sampled.
    type: list
    elements: str
    required: true
  path:
    description: The JSON lines file to write, on the host the module runs on (the controller, delegated).
    type: path
    required: true
  stop_file:
    description: Sampling stops once this file exists. Default O(path) with C(.stop) appended.
    type: path
  interval:
    description: Seconds between samples, above 0 and at most 60.
    type: float
    default: 0.5
  duration:
    description: Sampling stops after this many seconds at the latest, above 0 and at most a day.
    type: float
    default: 900
attributes:
  check_mode:
    support: none
    details: It writes the samples file.
  diff_mode:
    support: none
notes:
  - "Redis ACL (rq): C(+ping +exists +llen +hlen +zcard ~rq:queue:* ~rq:finished:* ~rq:failed:* ~queueops:ledger:*)."
  - "Redis ACL (celery): C(+ping +exists +llen +hlen ~<queue> ~queueops:ledger:*) (C(<queue>) for each of O(queues))."
seealso:
  - module: queueops.rollback.drill_report
"""

EXAMPLES = r"""
- name: Sample the orders queue while the deploy runs
  queueops.rollback.queue_sampler:
    backend: rq
    queues: [orders]
    path: /tmp/drill/samples.jsonl
    redis_url: "{{ redis_url }}"
  delegate_to: localhost
  async: 900
  poll: 0
"""

RETURN = r"""
samples:
  description: Samples written.
  returned: always
  type: int
  sample: 240
path:
  description: The file written.
  returned: always
  type: str
  sample: /tmp/drill/samples.jsonl
ledger:
  description: Whether the counts came from a task ledger.
  returned: always
  type: bool
  sample: true
stopped_by:
  description: V(stop_file) or V(duration).
  returned: always
  type: str
  sample: stop_file
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
    "path": {"type": "path", "required": True},
    "stop_file": {"type": "path"},
    "interval": {"type": "float", "default": 0.5},
    "duration": {"type": "float", "default": 900.0},
}


def run_module() -> None:
    module = new_module(OPTIONS, supports_check_mode=False)
    p = module.params
    stop_file = p["stop_file"] or f"{p['path']}.stop"
    client = connect(module)
    count, stopped_by = 0, "duration"
    with failing_in_words(module, f"sample the {p['backend']} queues", unexpected=True):
        ledger = drill.has_ledger(client)
        os.makedirs(os.path.dirname(os.path.abspath(p["path"])), exist_ok=True)
        if os.path.exists(stop_file):
            os.remove(stop_file)
        deadline = time.monotonic() + p["duration"]
        with open(p["path"], "w", encoding="utf-8") as handle:
            while time.monotonic() < deadline:
                handle.write(json.dumps(drill.sample(client, p["backend"], p["queues"], ledger)) + "\n")
                handle.flush()
                count += 1
                if os.path.exists(stop_file):
                    stopped_by = "stop_file"
                    break
                time.sleep(p["interval"])
            handle.write(json.dumps({"end": round(time.time(), 3), "samples": count}) + "\n")
    module.exit_json(changed=True, samples=count, path=p["path"], ledger=ledger, stopped_by=stopped_by)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
