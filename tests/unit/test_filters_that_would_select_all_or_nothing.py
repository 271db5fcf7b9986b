"""Replay filters and gate options: values that would silently select all tasks or none are refused."""

from __future__ import annotations

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.replay import InvalidFilter, Selection, parse_since
from tests.support.runner import run_module


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", float("nan")])
def test_since_that_is_not_a_finite_time_is_refused(value):
    # float() takes these: 'nan' let every task through the since filter, 'inf' none.
    with pytest.raises(InvalidFilter, match="is not a time"):
        parse_since(value)


def test_since_in_the_future_is_a_time_and_selects_nothing():
    since = parse_since("2999-01-01T00:00:00Z")
    assert not Selection(since=since).accepts(worker=None, ended_at=parse_since("1h"), task_name=None)


@pytest.mark.parametrize("spec", ["shop:2.0.0", "shop:2.0.0:1", "2.0.0@web-1"])
def test_failed_by_a_version_with_a_separator_is_refused_not_matched_against_nothing(spec):
    with pytest.raises(InvalidFilter, match="would match no worker"):
        Selection(failed_by=spec)


def test_failed_by_patterns_and_plain_versions_still_work():
    assert Selection(failed_by="shop:2.0.0:*").accepts(worker="shop:2.0.0:3", ended_at=None, task_name=None)
    assert Selection(failed_by="2.0.0", pool="shop").accepts(worker="shop:2.0.0:3", ended_at=None, task_name=None)
    with pytest.raises(InvalidFilter, match="pool 'shop:2' cannot contain"):
        Selection(failed_by="2.0.0", pool="shop:2")


def test_gate_refuses_a_release_that_can_match_no_worker(redis_server):
    # Before: 0 live workers of 'release shop:2.0.0' -> unhealthy -> a rescue: rolls back a healthy release.
    args = {"backend": "rq", "queues": ["orders"], "release": "shop:2.0.0", "window": 0.1}
    gate = run_module("rollout_check", dict(args, redis_url=redis_server.url))
    assert gate.failed and "would match no worker" in gate.msg
    assert "verdict" not in gate.result  # refused before observing, not judged unhealthy
