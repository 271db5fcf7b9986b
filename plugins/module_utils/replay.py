# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replay bookkeeping shared by the RQ and Celery backends: which tasks to pick, and the report.

Nothing here knows a key name: the backends read what each framework stores (worker name, end
time, task name) and ask a :class:`Selection` whether a task qualifies.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.identity import release_selector, release_spec_problem

IDS_CAP = 1000  # ids returned per source; counts are always complete

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InvalidFilter(ValueError):
    """A filter value the user must correct; the message says how."""


def parse_since(value: Any, now: float | None = None) -> float | None:
    """Epoch seconds from ``since``: epoch seconds, an ISO 8601 time (UTC if no zone), or ``30m``/``2h``/``1d`` ago."""
    if value is None or value == "":
        return None
    since = _parse_since(value, now)
    if not math.isfinite(since):  # float() takes 'nan' and 'inf': one would select everything, the other nothing
        raise InvalidFilter(f"since {str(value).strip()!r} is not a time: give a finite number of epoch seconds")
    return since


def _parse_since(value: Any, now: float | None) -> float:
    now = time.time() if now is None else now
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    parsed = parse_time(text)
    if parsed is None:
        raise InvalidFilter(
            f"since {text!r} is not a time: use epoch seconds, ISO 8601 (2024-05-01T12:00:00Z) "
            "or a duration ago (30m, 2h)"
        )
    return parsed


def parse_time(value: str | bytes | None) -> float | None:
    """Epoch seconds from the ISO 8601 times RQ (``...Z``) and Celery (``...+00:00``) store; None if absent."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def task_name_from_description(description: str | bytes | None) -> str | None:
    """RQ's default description is the call string ``module.func(args)``: the name is what precedes ``(``."""
    if not description:
        return None
    if isinstance(description, bytes):
        description = description.decode(errors="replace")
    name = description.split("(", 1)[0].strip()
    return name or None


@dataclass
class Selection:
    """Which tasks a replay takes: failed by workers of a release, since a time, of some task names."""

    failed_by: str | None = None
    pool: str | None = None
    since: float | None = None
    task_names: list[str] = field(default_factory=list)
    limit: int | None = None
    _worker_ok: Callable[[str], bool] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        problem = release_spec_problem("failed_by", self.failed_by, self.pool)
        if problem:
            raise InvalidFilter(problem)
        if self.failed_by:
            self._worker_ok = release_selector(self.failed_by, self.pool)
        if self.limit is not None and self.limit < 1:
            raise InvalidFilter(f"limit must be 1 or more, not {self.limit}")

    @property
    def filters_anything(self) -> bool:
        return bool(self.failed_by or self.since is not None or self.task_names)

    def accepts(self, *, worker: str | bytes | None, ended_at: float | None, task_name: str | None) -> bool:
        if self._worker_ok is not None:
            if not worker:
                return False
            if not self._worker_ok(worker.decode(errors="replace") if isinstance(worker, bytes) else worker):
                return False
        if self.since is not None and (ended_at is None or ended_at < self.since):
            return False
        return not self.task_names or (
            task_name is not None and any(fnmatchcase(task_name, pattern) for pattern in self.task_names)
        )

    def describe(self) -> dict[str, Any]:
        return {
            "failed_by": self.failed_by,
            "pool": self.pool,
            "since": self.since,
            "task_names": list(self.task_names),
            "limit": self.limit,
        }


@dataclass
class SourceReport:
    """What one source (failed, abandoned, queue) gave: complete counts, ids capped at IDS_CAP."""

    name: str
    candidates: int = 0  # entries looked at
    selected: int = 0  # entries the filters accepted
    replayed: int = 0  # moved / re-published (or that would be, in check mode)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    ids: list[str] = field(default_factory=list)

    def add_ids(self, ids: list[str]) -> None:
        room = IDS_CAP - len(self.ids)
        if room > 0:
            self.ids.extend(ids[:room])

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "selected": self.selected,
            "replayed": self.replayed,
            "skipped": dict(self.skipped),
            "ids": list(self.ids),
            "ids_truncated": self.replayed > len(self.ids),
        }


def batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
