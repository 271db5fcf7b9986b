"""task_requeue and rollout_check with killed workers, live workers with stale heartbeats, and odd options."""

from __future__ import annotations

import time

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import worker_name
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_rq_worker

pytestmark = pytest.mark.slow

BAD = worker_name("shop", "2.0.0", 0)
BAD_2 = worker_name("shop", "2.0.0", 1)


def test_rq_gate_does_not_count_a_killed_worker_as_live(redis_server, redis_client, workers):
    alive = start_rq_worker(redis_server.url, ["orders"], BAD, release="2.0.0")
    killed = start_rq_worker(redis_server.url, ["orders"], BAD_2, release="2.0.0")
    workers.extend([alive, killed])
    killed.kill()  # its hash stays for minutes and says "idle"; no connection is named after it any more
    args = {
        "backend": "rq",
        "queues": ["orders"],
        "release": "2.0.0",
        "pool": "shop",
        "window": 0.3,
        "min_tasks": 0,
        "min_workers": 2,
        "redis_url": redis_server.url,
    }
    gate = run_module("rollout_check", args)
    assert gate.failed and gate["verdict"] == "unhealthy"
    assert (gate["numbers"]["live_workers"], gate["numbers"]["workers"]) == (1, [BAD])
    assert gate["reasons"] == ["only 1 live worker(s) of release 2.0.0 of pool shop, at least 2 required"]


def test_abandoned_never_takes_the_job_a_connected_worker_is_running(redis_server, redis_client, ledger, workers):
    from rq import Queue

    workers.append(start_rq_worker(redis_server.url, ["orders"], BAD, release="2.0.0"))
    job = Queue("orders", connection=redis_client).enqueue("sampleapp.tasks.work", "long-1", seconds=5)
    ledger.note_enqueued("long-1")
    assert wait_until(lambda: len(ledger.starts()) == 1)
    time.sleep(1.2)  # RQ refreshes a busy worker's heartbeat every 30 s: older than heartbeat_timeout now
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "heartbeat_timeout": 1}
    result = run_module("task_requeue", dict(args, redis_url=redis_server.url))
    assert not result.failed, result.msg
    assert (result.changed, result["sources"]["abandoned"]["skipped"]) == (False, {"worker still running it": 1})
    assert wait_until(lambda: ledger.done_counts() == {"long-1": 1}, timeout=20)
    time.sleep(0.5)
    assert len(ledger.starts()) == 1 and redis_client.llen("rq:queue:orders") == 0, job.id


def test_gate_counts_a_queue_named_twice_once(redis_server, redis_client):
    from rq import Queue

    queue = Queue("orders", connection=redis_client)
    for i in range(3):
        queue.enqueue("sampleapp.tasks.work", f"waiting-{i}")
    args = {
        "backend": "rq",
        "queues": ["orders", "orders"],
        "release": "2.0.0",
        "window": 0.2,
        "min_workers": 0,
        "min_tasks": 0,
        "redis_url": redis_server.url,
    }
    gate = run_module("rollout_check", args)
    assert not gate.failed, gate.msg
    assert (gate["numbers"]["backlog_before"], gate["numbers"]["backlog_after"]) == (3, 3)
