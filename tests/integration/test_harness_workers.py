"""The harness itself: real rq and celery workers run the sample app and fill the ledger."""

from __future__ import annotations

import uuid

from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker


def test_rq_worker_runs_every_task_once(redis_server, redis_client, ledger):
    from rq import Queue

    queue = Queue("default", connection=redis_client)
    worker = start_rq_worker(redis_server.url, ["default"], "pool-v1-w1", release="v1")
    try:
        tokens = [f"rq-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
        for token in tokens:
            queue.enqueue("sampleapp.tasks.work", token)
        ledger.note_enqueued(*tokens)
        assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    finally:
        assert worker.stop() == 0
    assert ledger.duplicated() == {}
    assert {s["release"] for s in ledger.starts()} == {"v1"}
    assert {s["worker"] for s in ledger.starts()} == {"pool-v1-w1"}


def test_celery_worker_runs_every_task_once(redis_server, redis_client, ledger):
    from celery import Celery

    app = Celery(broker=redis_server.url)
    worker = start_celery_worker(redis_server.url, ["default"], "pool-v1-w1@test", release="v1")
    try:
        tokens = [f"cel-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
        for token in tokens:
            app.send_task("sampleapp.work", args=[token], queue="default")
        ledger.note_enqueued(*tokens)
        assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    finally:
        assert worker.stop() == 0
    assert ledger.duplicated() == {}
    assert {s["worker"] for s in ledger.starts()} == {"pool-v1-w1@test"}


def test_bad_release_fails_a_deterministic_share(redis_server, redis_client, ledger):
    from rq import Queue

    queue = Queue("default", connection=redis_client)
    worker = start_rq_worker(redis_server.url, ["default"], "pool-v2-w1", release="v2", fail_every=3)
    try:
        tokens = [f"bad-{i}" for i in range(30)]
        for token in tokens:
            queue.enqueue("sampleapp.tasks.work", token)
        assert wait_until(lambda: len(ledger.starts()) == 30)
        assert wait_until(lambda: queue.failed_job_registry.count + len(ledger.done_counts()) == 30)
    finally:
        worker.stop()
    failed = set(ledger.failed_counts())
    assert 0 < len(failed) < 30
    assert failed.isdisjoint(ledger.done_counts())
