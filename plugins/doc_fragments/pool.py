# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """The worker pool on a managed host, as the host-side modules name it."""

    DOCUMENTATION = r"""
options:
  pool:
    description:
      - Name of the worker pool. A single path component without C(/), C(..), C(:), C(@) or control
        characters, at most 128 characters and 200 bytes of UTF-8.
    type: str
    required: true
  root:
    description:
      - Directory holding one directory per pool on the managed host.
    type: path
    default: /opt/queueops
  lock_timeout:
    description:
      - Seconds to wait for the per-pool lock (C(.lock)) when another run holds it, as the run of a controller
        killed mid-task can for a while (its module goes on on the host). Then the task fails, naming the holder.
      - V(0) fails at once.
    type: float
    default: 0
"""
