# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting until the workers of a release consume: one rule for RQ and Celery.

Each backend offers ``consuming_workers`` (the live workers of a set of queues, as queue_info lists
them); ``wait_for_release`` polls it inside one module call, so a rollout's wait costs one task
whatever its length, and its timeout is the timeout (an Ansible ``until`` loop adds a task's cost
to every try).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Readiness:
    """What the wait saw last: the live workers of the release, every live worker, the seconds it took."""

    ready: bool
    release_workers: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    waited: float

    def message(self, pool: str, release: str, expected: int, timeout: float) -> str:
        names = [w["name"] for w in self.workers if w.get("pool") == pool]
        return (
            f"{expected} workers of release {release} of pool {pool} were expected to consume within {timeout:g} s; "
            f"{len(self.release_workers)} do. Live workers of the pool now: {names or 'none'}"
        )


def of_release(workers: list[dict[str, Any]], pool: str, release: str) -> list[dict[str, Any]]:
    return [w for w in workers if w.get("pool") == pool and w.get("release") == release]


def wait_for_release(
    read: Callable[[], list[dict[str, Any]]],
    pool: str,
    release: str,
    expected: int,
    timeout: float,
    poll: float = 0.2,
    likely: Callable[[], int] | None = None,
) -> Readiness:
    """Poll ``read()`` (live workers) until at least ``expected`` of them run ``release`` of ``pool``,
    at most ``timeout`` seconds (one look when it is 0).

    ``likely()``, when given, is a cheap count of the workers of the release that may consume (Celery:
    their mailboxes on the broker); ``read()``, which asks every worker, waits until it says enough, so
    workers that are starting are not asked to answer every ``poll`` seconds.
    """
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        if likely is None or waited >= timeout or likely() >= expected:
            workers = read()
            mine = of_release(workers, pool, release)
            waited = time.monotonic() - start
            if len(mine) >= expected or waited >= timeout:
                return Readiness(len(mine) >= expected, mine, workers, round(waited, 3))
        time.sleep(min(poll, max(0.0, timeout - waited)))
