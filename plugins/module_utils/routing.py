# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Versioned routing: what waits on the release queues ``<queue>@<version>`` of a pool queue.

The backends find the release queues and count what waits on them and who consumes them; this
file turns that into queue_info's per-release facts, the same for RQ and Celery. A release queue
with tasks and no live consumer is *parked*: its release was rolled back (or is not deployed yet),
and no other release consumes it. Nothing there is lost or run by older code; it runs once a
release that can run it consumes the queue, or after a move (task_requeue source=queue).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from ansible_collections.queueops.rollback.plugins.module_utils.identity import release_queues_of


def release_queue_facts(
    queues: Iterable[str],
    names: Iterable[str],
    depth: Callable[[list[str]], dict[str, int]],
    consumers: Callable[[str], int],
) -> tuple[dict[str, dict[str, dict[str, Any]]], list[str]]:
    """Per pool queue of ``queues``: version -> {queue, depth, consumers, parked}, and one warning
    per release queue with parked tasks. ``names`` are the queue names the broker knows;
    ``depth`` counts what waits on a list of them, ``consumers`` the live workers of one."""
    names = list(names)
    per_queue = {queue: release_queues_of(queue, names) for queue in queues}
    depths = depth(sorted({name for found in per_queue.values() for name in found.values()}))
    facts: dict[str, dict[str, dict[str, Any]]] = {}
    warnings = []
    for queue, found in per_queue.items():
        facts[queue] = {}
        for version, name in found.items():
            waiting, consuming = depths.get(name, 0), consumers(name)
            facts[queue][version] = {
                "queue": name,
                "depth": waiting,
                "consumers": consuming,
                "parked": waiting if not consuming else 0,
            }
            if waiting and not consuming:
                warnings.append(
                    f"{waiting} task(s) of release {version} are parked on {name}: no live worker consumes it. "
                    f"They run once a release that can run them consumes {name} (the rollout role's "
                    "rollout_release_queues_from), or move them with task_requeue source=queue"
                )
    return facts, warnings
