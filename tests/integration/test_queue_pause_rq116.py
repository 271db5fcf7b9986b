"""RQ 1.16 (the last 1.x) workers: the same pause proof and the 1.x started-registry layout."""

from __future__ import annotations

import time

import pytest

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_rq_worker

pytestmark = pytest.mark.slow


def test_rq116_idle_blocked_worker_takes_no_job_while_paused_and_drain_reads_1x_ids(
    redis_server, redis_client, ledger, rq116
):
    from rq import Queue

    idle = start_rq_worker(redis_server.url, ["idle"], "old:1.16:1", venv=rq116)
    busy = start_rq_worker(redis_server.url, ["slow"], "old:1.16:2", venv=rq116)
    try:
        assert wait_until(lambda: sum(c["cmd"] in ("blpop", "blmove") for c in redis_client.client_list()) >= 2)
        job = Queue("slow", connection=redis_client).enqueue("sampleapp.tasks.work", "slow-1", 3)
        assert wait_until(lambda: len(ledger.starts()) == 1)
        members = redis_client.zrange("rq:wip:slow", 0, -1)
        assert members == [job.id.encode()], "RQ 1.x keeps bare job ids in the started registry"
        args = {"backend": "rq", "queues": ["idle", "slow"], "redis_url": redis_server.url}
        result = run_module("queue_pause", {**args, "state": "drained", "timeout": 20})
        t_return = time.time()
        assert not result.failed, result.msg
        assert result["in_flight_at_start"] == 1 and result["left"] == 0
        assert result["in_flight_at_start_tasks"][0]["job_id"] == job.id
        assert result["in_flight_at_start_tasks"][0]["worker"] == "old:1.16:2"
        assert "old:1.16:1" in result["woken_workers"]
        Queue("idle", connection=redis_client).enqueue("sampleapp.tasks.work", "idle-1")
        time.sleep(1.5)
        assert ledger.starts_between(t_return, time.time(), {"idle", "slow"}) == []
        assert idle.alive() and busy.alive()
        assert run_module("queue_pause", {**args, "state": "resumed"}).changed
        assert wait_until(lambda: ledger.done_counts().get("idle-1") == 1)
    finally:
        idle.kill()
        busy.kill()
    assert not redis_client.keys("rq:job:queueops-wake-*")
