# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: run_owner
short_description: The owner id of this ansible-playbook run, for the pool lease
version_added: 0.2.0
author: queueops.rollback maintainers (@queueops)
description:
  - Returns C(<controller host>/<pid>.<start time>), naming the ansible-playbook process of this run; the same
    string in every task and every C(serial) batch of the run, a different one in the next run.
  - M(queueops.rollback.rollout_lease) takes it as O(queueops.rollback.rollout_lease#module:owner), and tells by
    it a lease left by a run killed on this controller (its process no longer runs) from a live one.
  - With an AWX job (the C(awx_job_id) or C(tower_job_id) extra variable), its id is added, as C(AWX job 42).
options: {}
"""

EXAMPLES = r"""
- name: Take the pool's lease for this run
  queueops.rollback.rollout_lease:
    pool: orders
    owner: "{{ lookup('queueops.rollback.run_owner') }}"
    redis_url: "{{ redis_url }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_raw:
  description: The owner id, one string.
  type: list
  elements: str
"""

from ansible.plugins.lookup import LookupBase

from ansible_collections.queueops.rollback.plugins.module_utils.lease import run_owner


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}
        job = variables.get("awx_job_id") or variables.get("tower_job_id")
        return [run_owner(f"(AWX job {job})" if job else None)]
