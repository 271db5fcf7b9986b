"""queue_pause against real `celery worker` 5.x processes: the ledger proves no task starts while paused."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker

pytestmark = pytest.mark.slow
NODE = "pool:v1:1@test"


@pytest.fixture
def celery_env(redis_server, redis_client):
    from celery import Celery

    app = Celery(broker=redis_server.url, set_as_current=False)
    worker = start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=2)
    try:
        yield app, worker
    finally:
        worker.kill()
        app.close()


def _args(redis_server, **kw):
    return {"backend": "celery", "redis_url": redis_server.url, "queues": ["orders"], **kw}


def test_no_task_starts_while_paused_and_resume_restores(redis_server, redis_client, ledger, celery_env):
    app, _worker = celery_env
    halt = threading.Event()

    def produce():
        i = 0
        while not halt.is_set():
            token = f"cel-{i}-{uuid.uuid4().hex[:6]}"
            ledger.note_enqueued(token)
            app.send_task("sampleapp.work", args=[token], queue="orders")
            i += 1
            time.sleep(0.03)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        assert wait_until(lambda: len(ledger.starts()) >= 5)
        paused = run_module("queue_pause", _args(redis_server, state="drained", timeout=20), diff=True)
        t_return = time.time()
        assert not paused.failed, paused.msg
        assert paused.changed and paused["paused"] == ["orders"] and paused["workers"] == {NODE: []}
        assert paused["diff"] == {"before": {"orders": "consuming"}, "after": {"orders": "paused"}}
        assert paused["left"] == 0
        again = run_module("queue_pause", _args(redis_server))
        assert not again.failed and not again.changed
        t_resume = time.time()
        assert ledger.starts_between(t_return, t_resume, {"orders"}) == []
        resumed = run_module("queue_pause", _args(redis_server, state="resumed"))
        assert not resumed.failed and resumed.changed and resumed["workers"] == {NODE: ["orders"]}
    finally:
        halt.set()
        producer.join()
    assert wait_until(lambda: not ledger.lost(), timeout=30), f"lost after resume: {len(ledger.lost())}"
    assert ledger.duplicated() == {}
    assert any(s["t"] > t_resume for s in ledger.starts())
    assert not run_module("queue_pause", _args(redis_server, state="resumed")).changed


def test_drain_reports_running_tasks_then_times_out_on_a_long_one(redis_server, redis_client, ledger, celery_env):
    app, _worker = celery_env
    short = app.send_task("sampleapp.work", args=["short", 5], queue="orders")
    long = app.send_task("sampleapp.work", args=["long", 30], queue="orders")
    assert wait_until(lambda: len(ledger.starts()) == 2)
    result = run_module("queue_pause", _args(redis_server, state="drained", timeout=8))
    assert result.failed
    assert result["in_flight_at_start"] == 2
    assert {t["id"] for t in result["in_flight_at_start_tasks"]} == {short.id, long.id}
    assert result["left"] == 1 and result["stragglers"][0]["worker"] == NODE
    assert result.msg == f"queues orders not drained after 8 s: 1 task(s) still running: {long.id} on {NODE}"
    done = ledger.done_counts()
    assert done.get("short") == 1 and "long" not in done, done


def test_named_worker_that_does_not_answer_fails_with_nothing_changed(redis_server, redis_client, celery_env):
    args = _args(redis_server, workers=[NODE, "pool:v1:9@gone"])
    result = run_module("queue_pause", args)
    assert result.failed and result["missing_workers"] == ["pool:v1:9@gone"]
    assert "did not answer" in result.msg and not result.changed
    allowed = run_module("queue_pause", {**args, "allow_missing_workers": True})
    assert not allowed.failed and allowed.changed and allowed["missing_workers"] == ["pool:v1:9@gone"]
    assert run_module("queue_pause", _args(redis_server, state="resumed")).changed


def test_prefetched_tasks_that_cannot_be_taken_back_are_returned_and_warned_about(
    redis_server, redis_client, ledger, workers
):
    """A worker that prefetches holds tasks Celery cannot take back: the pause says so instead of hiding it."""
    from celery import Celery

    app = Celery(broker=redis_server.url, set_as_current=False)
    node = "pool:v1:2@test"
    prefetching = ["--prefetch-multiplier", "4"]
    workers.append(start_celery_worker(redis_server.url, ["orders"], node, concurrency=1, extra_args=prefetching))
    running = app.send_task("sampleapp.work", args=["running", 4], queue="orders")
    held = [app.send_task("sampleapp.work", args=[f"held-{i}"], queue="orders").id for i in range(3)]
    assert wait_until(lambda: len(ledger.starts()) == 1)

    result = run_module("queue_pause", _args(redis_server, settle_timeout=0.5))

    assert not result.failed, result.msg
    assert sorted(t["id"] for t in result["prefetched_pending"]) == sorted(held)
    assert any("prefetched before the pause" in w for w in result.get("warnings", []))
    # The warning is the truth: once the running task ends, the held ones start although the queue is paused.
    assert wait_until(lambda: set(ledger.done_counts()) == {"running", "held-0", "held-1", "held-2"}, timeout=20)
    assert running.id not in held
    app.close()
