# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health gate's verdict, independent of RQ or Celery: numbers in, healthy / unhealthy / inconclusive out.

Hard failures (too few live workers, too many failures, backlog growing too fast) make a release
unhealthy whatever the sample size. The failure ratio is only judged once at least ``min_tasks``
tasks ran; with fewer, and nothing else wrong, the verdict is "inconclusive", which the caller
maps to pass or fail (``inconclusive_is``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
INCONCLUSIVE = "inconclusive"


@dataclass
class Thresholds:
    min_tasks: int = 10
    max_failure_ratio: float = 0.05
    max_failures: int | None = None
    min_workers: int = 1
    max_backlog_growth: int | None = None
    inconclusive_is: str = "fail"

    def problems(self) -> list[str]:
        """What is wrong with the thresholds themselves, in words (empty when they are usable)."""
        problems = []
        if self.min_tasks < 0:
            problems.append(f"min_tasks must be 0 or more, not {self.min_tasks}")
        if not 0.0 <= self.max_failure_ratio <= 1.0:
            problems.append(f"max_failure_ratio must be between 0 and 1, not {self.max_failure_ratio}")
        if self.max_failures is not None and self.max_failures < 0:
            problems.append(f"max_failures must be 0 or more, not {self.max_failures}")
        if self.min_workers < 0:
            problems.append(f"min_workers must be 0 or more, not {self.min_workers}")
        if self.inconclusive_is not in ("pass", "fail"):
            problems.append(f"inconclusive_is must be 'pass' or 'fail', not {self.inconclusive_is!r}")
        return problems


@dataclass
class Observation:
    """What was measured over the window for the workers of one release."""

    window: float
    successes: int
    failures: int
    live_workers: int
    backlog_before: int
    backlog_after: int
    workers: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return self.successes + self.failures

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.tasks if self.tasks else 0.0

    @property
    def backlog_growth(self) -> int:
        return self.backlog_after - self.backlog_before


@dataclass
class Verdict:
    status: str  # healthy | unhealthy | inconclusive
    healthy: bool  # what the gate decides: inconclusive is mapped through inconclusive_is
    reason: str
    reasons: list[str]
    numbers: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def judge(observed: Observation, limits: Thresholds, subject: str = "the release") -> Verdict:
    """Decide from the numbers; every reason names the measured value and the limit it broke."""
    window = f"{observed.window:g} s"
    failed_checks: list[str] = []
    if observed.live_workers < limits.min_workers:
        failed_checks.append(
            f"only {observed.live_workers} live worker(s) of {subject}, at least {limits.min_workers} required"
        )
    if limits.max_failures is not None and observed.failures > limits.max_failures:
        failed_checks.append(
            f"{observed.failures} task(s) failed in {window}, more than max_failures {limits.max_failures}"
        )
    if observed.tasks and observed.tasks >= limits.min_tasks and observed.failure_ratio > limits.max_failure_ratio:
        failed_checks.append(
            f"{observed.failures} of {observed.tasks} tasks failed ({_pct(observed.failure_ratio)}), "
            f"more than max_failure_ratio {_pct(limits.max_failure_ratio)}"
        )
    if limits.max_backlog_growth is not None and observed.backlog_growth > limits.max_backlog_growth:
        failed_checks.append(
            f"backlog grew by {observed.backlog_growth} ({observed.backlog_before} -> {observed.backlog_after}), "
            f"more than max_backlog_growth {limits.max_backlog_growth}"
        )

    numbers = {
        "window": observed.window,
        "tasks": observed.tasks,
        "successes": observed.successes,
        "failures": observed.failures,
        "failure_ratio": round(observed.failure_ratio, 6),
        "live_workers": observed.live_workers,
        "workers": sorted(observed.workers),
        "backlog_before": observed.backlog_before,
        "backlog_after": observed.backlog_after,
        "backlog_growth": observed.backlog_growth,
        "thresholds": asdict(limits),
    }
    if failed_checks:
        reason = f"{subject} is unhealthy: " + "; ".join(failed_checks)
        return Verdict(UNHEALTHY, False, reason, failed_checks, numbers)
    if observed.tasks < limits.min_tasks:
        why = f"only {observed.tasks} task(s) ran on {subject} in {window}, at least {limits.min_tasks} needed to judge"
        passes = limits.inconclusive_is == "pass"
        verdict = "treated as a pass" if passes else "treated as a failure"
        return Verdict(INCONCLUSIVE, passes, f"inconclusive ({verdict}): {why}", [why], numbers)
    reason = (
        f"{subject} is healthy: {observed.failures} of {observed.tasks} tasks failed "
        f"({_pct(observed.failure_ratio)}, limit {_pct(limits.max_failure_ratio)}) in {window}, "
        f"{observed.live_workers} live worker(s), backlog {observed.backlog_before} -> {observed.backlog_after}"
    )
    return Verdict(HEALTHY, True, reason, [], numbers)
