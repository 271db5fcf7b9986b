"""task_requeue on Celery: re-publish from the result backend exactly what the bad release failed, once."""

from __future__ import annotations

import json

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import worker_name
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker

pytestmark = pytest.mark.slow

GOOD = worker_name("shop", "1.0.0", 0) + "@test"
BAD = worker_name("shop", "2.0.0", 0) + "@test"


def test_republishes_exactly_what_the_bad_release_failed_once(redis_server, redis_client, ledger, workers):
    from celery import Celery

    app = Celery(broker=redis_server.url, set_as_current=False)
    bad = start_celery_worker(redis_server.url, ["orders"], BAD, release="2.0.0", fail_every=3)
    workers.append(bad)
    tokens = [f"order-{i}" for i in range(30)]
    token_of = {app.send_task("sampleapp.work", args=[t], queue="orders").id: t for t in tokens}
    ledger.note_enqueued(*tokens)
    assert wait_until(lambda: len(ledger.done_counts()) + len(ledger.failed_counts()) == 30)
    assert wait_until(lambda: len(redis_client.keys("celery-task-meta-*")) == 30)
    bad.stop()
    failed_tokens = set(ledger.failed_counts())
    expected = {task_id for task_id, token in token_of.items() if token in failed_tokens}
    assert 0 < len(expected) < 30
    args = {"backend": "celery", "queues": ["orders"], "failed_by": "2.0.0", "redis_url": redis_server.url}

    preview = run_module("task_requeue", args, check=True)
    assert not preview.failed, preview.msg
    assert set(preview["ids"]) == expected and redis_client.llen("orders") == 0

    replay = run_module("task_requeue", args)
    assert not replay.failed, replay.msg
    assert replay.changed and set(replay["ids"]) == expected
    assert redis_client.llen("orders") == len(expected)
    envelope = json.loads(redis_client.lindex("orders", 0))
    assert envelope["headers"]["task"] == "sampleapp.work"  # protocol 2: the task name is in the headers
    assert envelope["headers"]["id"] in expected and envelope["content-type"] == "application/json"

    again = run_module("task_requeue", args)
    assert (again.changed, again["replayed"]) == (False, 0)
    assert again["sources"]["failed"]["skipped"]["already replayed"] == len(expected)

    workers.append(start_celery_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    assert ledger.duplicated() == {}
    after = run_module("task_requeue", args)
    assert after["replayed"] == 0
    assert {json.loads(redis_client.get(f"celery-task-meta-{i}"))["status"] for i in expected} == {"SUCCESS"}


def test_results_without_result_extended_are_reported_not_replayed(redis_server, redis_client):
    meta = {"status": "FAILURE", "result": {"exc_type": "RuntimeError"}, "traceback": "", "children": []}
    meta.update(task_id="abc", date_done="2026-01-01T00:00:00+00:00")
    redis_client.set("celery-task-meta-abc", json.dumps(meta))
    result = run_module("task_requeue", {"backend": "celery", "redis_url": redis_server.url})
    assert not result.failed and result["replayed"] == 0
    reason = "no task name or arguments in the result (result_extended is off)"
    assert result["sources"]["failed"]["skipped"] == {reason: 1}
    assert any("result_extended is off" in w for w in result.get("warnings", []))


def test_abandoned_is_refused_for_celery_with_the_reason(redis_server):
    result = run_module("task_requeue", {"backend": "celery", "source": "abandoned", "redis_url": redis_server.url})
    assert result.failed and "broker redelivers" in result.msg
