"""queue_info reads what real RQ and Celery workers and their queues look like."""

from __future__ import annotations

import socket
import threading

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
        "exists": True,
        "depth": 3,
        "in_flight": 1,
        "consumers": 1,
        "failed": 1,
        "scheduled": 0,
        "deferred": 0,
        "finished": 0,
        "paused": True,
        "releases": {},
        "parked": 0,
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


def test_rq_worker_killed_mid_job_shows_gone_and_its_job_abandoned(redis_server, redis_client, ledger, workers):
    from rq import Queue

    worker = start_rq_worker(redis_server.url, ["orders"], "orders:2.4.1:1")
    workers.append(worker)
    job = Queue("orders", connection=redis_client).enqueue("sampleapp.tasks.work", "running", 30)
    assert wait_until(lambda: len(ledger.starts()) == 1)
    worker.kill()
    info = run_module("queue_info", {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url})
    assert not info.failed, info.msg
    (w,) = info["workers"]
    assert w["state"] == "gone", "its hash still says busy, but nobody runs the job"
    assert [(t["job_id"], t["reason"]) for t in info["abandoned"]["orders"]] == [
        (job.id, "its worker is gone (no connection named after it: killed)")
    ]
    assert info["queues"]["orders"]["in_flight"] == 0 and info["queues"]["orders"]["consumers"] == 0


def test_rq_worker_named_on_every_connection_stays_live_after_redis_dropped_them(redis_server, redis_client, workers):
    # RQ names only the connection it registered on; after a restart or a failover of Redis it opens
    # nameless ones, and the liveness rule (a connection named after the worker) calls it gone. The
    # worker_release unit puts client_name in the URL (the Sentinel settings module, in its
    # connection options), so that every connection the worker opens carries its name.
    named, plain = "orders:2.4.1:1", "orders:2.4.1:2"
    workers.append(start_rq_worker(f"{redis_server.url}?client_name={named}", ["orders"], named))
    workers.append(start_rq_worker(redis_server.url, ["orders"], plain))
    for kind in ("normal", "pubsub"):  # what a restart does to every connection
        redis_client.client_kill_filter(_type=kind, skipme=True)
    assert wait_until(
        lambda: sum(1 for e in redis_client.client_list() if e.get("cmd") == "blmove") == 2, timeout=20
    ), "both workers wait in their dequeue again"

    info = run_module("queue_info", {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url})

    assert not info.failed, info.msg
    assert {w["name"]: w["state"] for w in info["workers"]} == {named: "idle", plain: "gone"}
    assert info["queues"]["orders"]["consumers"] == 1


def test_rq_unknown_queue_backlog_without_consumers_and_suspension_without_workers(redis_server, redis_client):
    from rq import Queue

    Queue("reports", connection=redis_client).enqueue("sampleapp.tasks.work", "waiting")
    redis_client.set("rq:suspended", 1)
    info = run_module("queue_info", {"backend": "rq", "queues": ["reports", "ordres"], "redis_url": redis_server.url})
    assert not info.failed, info.msg
    assert info["queues"]["ordres"]["exists"] is False and info["queues"]["reports"]["exists"] is True
    assert info["queues"]["reports"]["consumers"] == 0
    assert "queue reports has 1 job(s) waiting and no live worker consumes it" in info["warnings"]
    assert any("`rq worker` refuses to start while it is set" in w for w in info["warnings"])


def test_celery_in_flight_split_into_running_and_prefetched(redis_server, redis_client, ledger, workers):
    from celery import Celery

    node = "orders:3.0.0:1@test"
    workers.append(
        start_celery_worker(
            redis_server.url, ["orders"], node, concurrency=1, extra_args=["--prefetch-multiplier", "4"]
        )
    )
    app = Celery(broker=redis_server.url, set_as_current=False)
    app.send_task("sampleapp.work", args=["running", 20], queue="orders")
    for i in range(2):
        app.send_task("sampleapp.work", args=[f"held-{i}"], queue="orders")
    app.close()
    assert wait_until(lambda: len(ledger.starts()) == 1)
    args = {"backend": "celery", "queues": ["orders", "ordres"], "redis_url": redis_server.url}
    assert wait_until(lambda: run_module("queue_info", args)["queues"]["orders"]["prefetched"] == 2, timeout=10)
    info = run_module("queue_info", args)
    orders = info["queues"]["orders"]
    assert (orders["running"], orders["prefetched"], orders["in_flight"], orders["consumers"]) == (1, 2, 3, 1)
    assert info["queues"]["ordres"]["exists"] is False
    assert "last_heartbeat" not in info["workers"][0]


def test_celery_every_live_worker_answers_whether_or_not_a_dead_one_left_its_mailbox(
    redis_server, redis_client, workers
):
    from ansible_collections.queueops.rollback.plugins.module_utils.celery_backend import (
        PIDBOX_BINDINGS_KEY,
        registered_nodes,
    )

    nodes = ["orders:3.0.0:1@test", "orders:3.0.0:2@test"]
    workers.extend(start_celery_worker(redis_server.url, ["orders"], node, concurrency=1) for node in nodes)
    args = {"backend": "celery", "queues": ["orders"], "redis_url": redis_server.url, "reply_timeout": 3}
    assert wait_until(lambda: len(run_module("queue_info", {**args, "reply_timeout": 1})["workers"]) == 2, timeout=30)
    # the wait for replies ends once as many nodes answered as have a mailbox: both of them
    assert registered_nodes(redis_client) == set(nodes)
    assert sorted(w["name"] for w in run_module("queue_info", args)["workers"]) == nodes
    # a killed worker's mailbox never answers: the wait is the whole reply_timeout, and still finds both
    live = next(m for m in redis_client.smembers(PIDBOX_BINDINGS_KEY) if nodes[0].encode() in m)
    redis_client.sadd(PIDBOX_BINDINGS_KEY, live.replace(b"orders:3.0.0:1@test", b"orders:2.9.0:1@gone"))
    assert len(registered_nodes(redis_client)) == 3
    info = run_module("queue_info", args)
    assert sorted(w["name"] for w in info["workers"]) == nodes
    assert info["queues"]["orders"]["consumers"] == 2


def test_celery_unacked_tasks_are_counted_when_no_worker_answers(redis_server, redis_client, ledger, workers):
    from celery import Celery

    node = "orders:3.0.0:1@test"
    worker = start_celery_worker(redis_server.url, ["orders"], node, concurrency=1)
    workers.append(worker)
    app = Celery(broker=redis_server.url, set_as_current=False)
    app.send_task("sampleapp.work", args=["running", 30], queue="orders")
    app.close()
    assert wait_until(lambda: len(ledger.starts()) == 1)
    worker.kill()  # the message stays in the transport's unacked hash until it is restored
    args = {"backend": "celery", "queues": ["orders"], "redis_url": redis_server.url, "reply_timeout": 0.3}
    info = run_module("queue_info", args)
    assert not info.failed, info.msg
    assert info["queues"]["orders"]["unacked"] == 1 and info["queues"]["orders"]["in_flight"] == 1


@pytest.mark.parametrize("backend", ["rq", "celery"])
def test_wait_returns_once_the_release_workers_consume_and_fails_in_time_naming_the_live_ones(
    backend, redis_server, redis_client, workers
):
    start = start_rq_worker if backend == "rq" else start_celery_worker
    args = {"backend": backend, "queues": ["orders"], "redis_url": redis_server.url, "pool": "orders"}
    workers.append(
        start(redis_server.url, ["orders"], "orders:1.0.0:1@test" if backend == "celery" else "orders:1.0.0:1")
    )
    # the new release's worker starts once the waiting module is connected: the one call sees it come
    late = "orders:2.0.0:1@test" if backend == "celery" else "orders:2.0.0:1"
    clients = len(redis_client.client_list())
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(
            ready=run_module("queue_info", {**args, "version": "2.0.0", "workers_expected": 1, "timeout": 60})
        )
    )
    waiter.start()
    try:
        assert wait_until(lambda: len(redis_client.client_list()) > clients, timeout=30)
        workers.append(start(redis_server.url, ["orders"], late))
    finally:
        waiter.join()
    ready = result["ready"]
    assert not ready.failed, ready.msg
    assert ready["waited"] > 0.05
    assert sorted(w["release"] for w in ready["workers"]) == ["1.0.0", "2.0.0"]
    # a release with fewer live workers than expected: the task fails at its timeout, naming who consumes
    short = run_module("queue_info", {**args, "version": "2.0.0", "workers_expected": 2, "timeout": 1.5})
    assert short.failed
    assert 1.5 <= short["waited"] < 10
    assert short.msg.startswith(
        "2 workers of release 2.0.0 of pool orders were expected to consume within 1.5 s; 1 do."
    )
    assert "orders:1.0.0:1" in short.msg and "orders:2.0.0:1" in short.msg
    # the workers of another release never count for this one
    other = run_module("queue_info", {**args, "version": "3.0.0", "workers_expected": 1, "timeout": 0})
    assert other.failed and "; 0 do." in other.msg and other["waited"] < 10


def test_wait_needs_pool_and_version(redis_server):
    result = run_module("queue_info", {"backend": "rq", "redis_url": redis_server.url, "workers_expected": 1})
    assert result.failed
    assert "workers_expected" in result.msg and "pool" in result.msg and "version" in result.msg
