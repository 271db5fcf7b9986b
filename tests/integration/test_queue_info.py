"""queue_info reads what real RQ and Celery workers and their queues look like."""

from __future__ import annotations

import socket

import pytest

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

pytestmark = pytest.mark.slow


def test_rq_facts_show_depth_in_flight_failed_paused_and_worker_release(redis_server, redis_client, ledger):
    from rq import Queue

    worker = start_rq_worker(redis_server.url, ["orders"], "orders:2.4.1:1", fail_every=1)
    try:
        queue = Queue("orders", connection=redis_client)
        queue.enqueue("sampleapp.tasks.work", "fails")
        assert wait_until(lambda: queue.failed_job_registry.count == 1)
        queue.enqueue("sampleapp.tasks.work", "running", 30)
        assert wait_until(lambda: len(ledger.starts()) == 2)
        redis_client.set("rq:suspended", 1, ex=60)
        for i in range(3):
            queue.enqueue("sampleapp.tasks.work", f"waiting-{i}")
        info = run_module("queue_info", {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url})
    finally:
        worker.kill()
    assert not info.failed and not info.changed
    assert info["queues"]["orders"] == {
        "depth": 3,
        "in_flight": 1,
        "failed": 1,
        "scheduled": 0,
        "deferred": 0,
        "finished": 0,
        "paused": True,
    }
    assert info["suspended"] is True and 0 < info["suspension_ttl"] <= 60
    (w,) = info["workers"]
    assert (w["name"], w["pool"], w["release"], w["state"]) == ("orders:2.4.1:1", "orders", "2.4.1", "busy")
    assert w["host"] == socket.gethostname() and w["last_heartbeat"]


def test_celery_facts_show_consumers_and_paused_queue(redis_server, redis_client):
    node = "orders:3.0.0:1@test"
    worker = start_celery_worker(redis_server.url, ["orders", "emails"], node)
    try:
        paused = run_module("queue_pause", {"backend": "celery", "queues": ["emails"], "redis_url": redis_server.url})
        assert not paused.failed, paused.msg
        info = run_module(
            "queue_info", {"backend": "celery", "queues": ["orders", "emails"], "redis_url": redis_server.url}
        )
    finally:
        worker.kill()
    assert not info.failed, info.msg
    assert info["queues"]["orders"]["paused"] is False
    assert info["queues"]["emails"]["paused"] is True and info["queues"]["emails"]["paused_from"] == [node]
    (w,) = info["workers"]
    assert (w["name"], w["host"], w["release"], w["queues"]) == (node, "test", "3.0.0", ["orders"])
