# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """The worker framework, as every module that reads or changes queues takes it."""

    DOCUMENTATION = r"""
options:
  backend:
    description: The worker framework, V(rq) or V(celery).
    type: str
    required: true
    choices: [rq, celery]
"""
