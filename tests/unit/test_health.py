"""The health gate's verdict: every threshold, its words and its numbers (no Redis needed)."""

from __future__ import annotations

from ansible_collections.queueops.rollback.plugins.module_utils.health import Observation, Thresholds, judge


def _observed(successes=0, failures=0, live_workers=2, before=0, after=0, window=30.0):
    return Observation(window, successes, failures, live_workers, before, after, [])


def test_low_failure_ratio_with_enough_tasks_is_healthy():
    verdict = judge(_observed(successes=99, failures=1), Thresholds(min_tasks=10, max_failure_ratio=0.05), "release 2")
    assert (verdict.status, verdict.healthy) == ("healthy", True)
    assert verdict.reason == (
        "release 2 is healthy: 1 of 100 tasks failed (1.0%, limit 5.0%) in 30 s, 2 live worker(s), backlog 0 -> 0"
    )
    assert verdict.numbers["tasks"] == 100 and verdict.numbers["failure_ratio"] == 0.01


def test_failure_ratio_above_limit_is_unhealthy_with_both_numbers():
    verdict = judge(_observed(successes=20, failures=10), Thresholds(max_failure_ratio=0.05), "release 2")
    assert (verdict.status, verdict.healthy) == ("unhealthy", False)
    assert verdict.reasons == ["10 of 30 tasks failed (33.3%), more than max_failure_ratio 5.0%"]
    assert verdict.reason == "release 2 is unhealthy: 10 of 30 tasks failed (33.3%), more than max_failure_ratio 5.0%"


def test_too_few_tasks_is_inconclusive_and_follows_inconclusive_is():
    failing = judge(_observed(successes=3), Thresholds(min_tasks=10, inconclusive_is="fail"))
    passing = judge(_observed(successes=3), Thresholds(min_tasks=10, inconclusive_is="pass"))
    assert (failing.status, failing.healthy) == ("inconclusive", False)
    assert (passing.status, passing.healthy) == ("inconclusive", True)
    assert "only 3 task(s) ran on the release in 30 s, at least 10 needed to judge" in failing.reason
    assert failing.reason.startswith("inconclusive (treated as a failure)")


def test_one_failure_of_one_task_is_not_judged_by_ratio_below_min_tasks():
    verdict = judge(_observed(failures=1), Thresholds(min_tasks=10, max_failure_ratio=0.05))
    assert verdict.status == "inconclusive"


def test_hard_limits_fail_whatever_the_sample_size():
    verdict = judge(
        _observed(successes=1, failures=3, live_workers=0, before=5, after=50),
        Thresholds(min_tasks=10, max_failures=2, min_workers=1, max_backlog_growth=10),
    )
    assert verdict.status == "unhealthy"
    assert verdict.reasons == [
        "only 0 live worker(s) of the release, at least 1 required",
        "3 task(s) failed in 30 s, more than max_failures 2",
        "backlog grew by 45 (5 -> 50), more than max_backlog_growth 10",
    ]
    assert verdict.numbers["backlog_growth"] == 45


def test_exactly_at_the_limits_is_healthy():
    verdict = judge(
        _observed(successes=95, failures=5, live_workers=1, before=0, after=10),
        Thresholds(min_tasks=100, max_failure_ratio=0.05, max_failures=5, min_workers=1, max_backlog_growth=10),
    )
    assert verdict.status == "healthy"


def test_invalid_thresholds_are_explained():
    assert Thresholds(max_failure_ratio=1.5, min_tasks=-1, inconclusive_is="maybe").problems() == [
        "min_tasks must be 0 or more, not -1",
        "max_failure_ratio must be between 0 and 1, not 1.5",
        "inconclusive_is must be 'pass' or 'fail', not 'maybe'",
    ]
