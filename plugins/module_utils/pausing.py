# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What pausing, resuming and draining queues returns: one shape for the RQ and Celery backends.

Each backend offers ``pause_queues`` and ``resume_queues`` returning a ``PauseOutcome``, and raises
``PauseError`` when the change cannot be made or proven; ``drain`` waits on either backend's
in-flight view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

PAUSED = "paused"
CONSUMING = "consuming"


@dataclass
class PauseOutcome:
    """The result of a pause or a resume.

    ``before`` / ``after`` map each queue to ``paused`` or ``consuming`` as live workers see it;
    ``details`` holds the backend's own result fields (woken workers, node consumers, ...).
    """

    changed: bool
    before: dict[str, str]
    after: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def paused(self) -> list[str]:
        return [queue for queue, state in self.after.items() if state == PAUSED]

    def result(self) -> dict[str, Any]:
        return {"changed": self.changed, "paused": self.paused, **self.details}


class PauseError(Exception):
    """A pause or resume that could not be made or proven; ``fields`` go into the failed result.

    ``changed`` says whether anything was changed before the error (a failed result reports it).
    """

    def __init__(self, msg: str, *, changed: bool = False, **fields: Any) -> None:
        super().__init__(msg)
        self.changed = changed
        self.fields = fields


def states(queues: list[str], paused: Callable[[str], bool]) -> dict[str, str]:
    return {queue: PAUSED if paused(queue) else CONSUMING for queue in queues}


def drain(in_flight: Callable[[], list], timeout: float, check_mode: bool, poll: float = 0.05) -> dict[str, Any]:
    """Poll ``in_flight()`` until it is empty or ``timeout`` seconds have passed.

    Returns ``in_flight_at_start`` (count), ``in_flight_at_start_tasks``, ``left``, ``stragglers``
    and ``elapsed``. In check mode it looks once and waits for nothing.
    """
    start = time.monotonic()
    first = in_flight()
    current = first
    while current and not check_mode and time.monotonic() - start < timeout:
        time.sleep(poll)
        current = in_flight()
    return {
        "in_flight_at_start": len(first),
        "in_flight_at_start_tasks": first,
        "left": len(current),
        "stragglers": current,
        "elapsed": 0.0 if check_mode else round(time.monotonic() - start, 3),
    }


def unknown_queues_message(unknown: list[str], where: str) -> str:
    return (
        f"queue(s) {', '.join(unknown)} unknown at {where}: no jobs, no registries and no worker consuming them "
        "(a typo?). Set allow_unknown_queues to pause or resume them anyway"
    )
