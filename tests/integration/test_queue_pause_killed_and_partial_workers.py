"""queue_pause and queue_info with killed workers, and with pauses of some workers only (real RQ and Celery)."""

from __future__ import annotations

import socket

import pytest

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

pytestmark = pytest.mark.slow


def _rq(redis_server, **kw):
    return {"backend": "rq", "redis_url": redis_server.url, **kw}


def _celery(redis_server, **kw):
    return {"backend": "celery", "redis_url": redis_server.url, **kw}


def test_rq_drain_does_not_wait_for_a_job_abandoned_by_a_killed_worker(redis_server, redis_client, ledger, workers):
    from rq import Queue

    dead = start_rq_worker(redis_server.url, ["default"], "pool:v1:1")
    workers.append(dead)
    job = Queue("default", connection=redis_client).enqueue("sampleapp.tasks.work", "orphan", 60)
    assert wait_until(lambda: len(ledger.starts()) == 1)
    dead.kill()  # its job stays in rq:wip:default, its worker hash lives on until its TTL
    assert redis_client.zcard("rq:wip:default") == 1 and redis_client.exists("rq:worker:pool:v1:1")
    result = run_module("queue_pause", _rq(redis_server, queues=["default"], state="drained", timeout=20))
    assert not result.failed, result.msg
    assert result["left"] == 0 and result["stragglers"] == [] and result["elapsed"] < 5
    assert [(t["job_id"], t["worker"]) for t in result["abandoned"]] == [(job.id, "pool:v1:1")]
    info = run_module("queue_info", _rq(redis_server, queues=["default"]))
    assert info["queues"]["default"]["in_flight"] == 0
    assert [(t["job_id"], t["worker"]) for t in info["abandoned"]["default"]] == [(job.id, "pool:v1:1")]


@pytest.fixture
def two_celery_workers(redis_server, workers):
    """Node names of two Celery workers consuming ``orders``, stopped when the test ends."""
    host = socket.gethostname()
    names = (f"pool:v1:1@{host}", f"pool:v1:2@{host}")
    for name in names:
        workers.append(start_celery_worker(redis_server.url, ["orders"], name, concurrency=1))
    return names


def test_celery_resume_of_some_workers_keeps_the_others_paused_record(redis_server, redis_client, two_celery_workers):
    a, b = two_celery_workers
    paused = run_module("queue_pause", _celery(redis_server, queues=["orders"]))
    assert not paused.failed and paused.changed, paused.msg
    one = run_module("queue_pause", _celery(redis_server, queues=["orders"], state="resumed", workers=[a]))
    assert not one.failed and one.changed, one.msg
    assert one["workers"] == {a: ["orders"]}
    rest = run_module("queue_pause", _celery(redis_server, queues=["orders"], state="resumed"))
    assert not rest.failed and rest.changed, rest.msg
    assert rest["workers"] == {a: ["orders"], b: ["orders"]} and rest["paused"] == []
    assert not redis_client.hexists("queueops:celery:paused", "orders")


def test_rq_pause_is_not_held_up_by_the_hash_of_a_killed_idle_worker(redis_server, redis_client, workers):
    dead = start_rq_worker(redis_server.url, ["default"], "pool:v1:1")
    workers.append(dead)
    assert wait_until(lambda: redis_client.hget("rq:worker:pool:v1:1", "state") == b"idle")
    dead.kill()  # the hash still says idle until its TTL (420 s), but nobody waits in the dequeue
    result = run_module("queue_pause", _rq(redis_server, queues=["default"], settle_timeout=3))
    assert not result.failed, result.msg
    assert result.changed and result["woken_workers"] == []
    assert redis_client.llen("rq:queue:default") == 0 and not redis_client.keys("rq:job:queueops-wake-*")


def test_celery_pause_of_some_workers_does_not_report_a_queue_others_consume_as_paused(
    redis_server, redis_client, two_celery_workers
):
    a, b = two_celery_workers
    one = run_module("queue_pause", _celery(redis_server, queues=["orders"], workers=[a]), diff=True)
    assert not one.failed and one.changed, one.msg
    assert one["workers"] == {a: []}
    assert one["paused"] == [], "b still consumes orders: tasks keep starting on it"
    assert one["diff"]["after"] == {"orders": "consuming"}
    both = run_module("queue_pause", _celery(redis_server, queues=["orders"], workers=[a, b]))
    assert not both.failed and both["paused"] == ["orders"], both.msg


def test_celery_queue_info_counts_a_queue_whose_name_has_glob_characters(redis_server, redis_client):
    redis_client.rpush("jobs[eu]", "m1", "m2", "m3")
    redis_client.rpush("jobs[eu]\x06\x163", "m4")  # its priority-3 list
    redis_client.rpush("jobse", "other")  # what the unescaped pattern jobs[eu]* matches instead
    info = run_module("queue_info", _celery(redis_server, queues=["jobs[eu]"], reply_timeout=0.2))
    assert not info.failed, info.msg
    assert info["queues"]["jobs[eu]"]["depth"] == 4
