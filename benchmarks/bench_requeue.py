"""Replay 100,000 failed RQ jobs: task_requeue's Lua batches against `rq requeue --all`, same data, same run.

    .venv/bin/python benchmarks/bench_requeue.py [--jobs 100000]

Starts its own redis-server on a free loopback port. The failed jobs are made with rq's own Job API
once, then the hash shape is copied with pipelines (new ids, same fields). Each contender gets a
fresh copy of the same data. Afterwards every job must be on the queue exactly once with status
``queued``, and the failed registry must be empty.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".cache" / "collections"))
sys.path.insert(0, str(REPO))

from ansible_collections.queueops.rollback.plugins.module_utils.replay import Selection  # noqa: E402
from ansible_collections.queueops.rollback.plugins.module_utils.rq_backend import replay  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

QUEUE = "bench"


def make_failed_jobs(client, count: int) -> list[str]:
    """One failed job through rq's API, then ``count`` copies of its hash and registry entry."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    client.flushall()
    queue = Queue(QUEUE, connection=client)
    job = Job.create("sampleapp.tasks.work", args=("template",), connection=client, origin=QUEUE)
    job.worker_name = "bench:2.0.0:0"
    job.save()
    registry = FailedJobRegistry(QUEUE, connection=client)
    with client.pipeline() as pipe:
        job.set_status("failed", pipeline=pipe)
        registry.add(job, ttl=3600, pipeline=pipe, exc_string="RuntimeError: bad release")
        pipe.execute()
    queue.connection.sadd("rq:queues", queue.key)
    shape = client.hgetall(job.key)
    score = client.zscore(registry.key, job.id)
    client.delete(job.key)
    client.zrem(registry.key, job.id)
    ids = [uuid.uuid4().hex for _ in range(count)]
    for start in range(0, count, 5000):
        with client.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + 5000]:
                pipe.hset(f"rq:job:{job_id}", mapping=shape)
                pipe.expire(f"rq:job:{job_id}", 3600)
            pipe.zadd(registry.key, {job_id: score for job_id in ids[start : start + 5000]})
            pipe.execute()
    return ids


def verify(client, ids: list[str]) -> None:
    queued = [i.decode() for i in client.lrange(f"rq:queue:{QUEUE}", 0, -1)]
    assert len(queued) == len(ids), f"{len(queued)} on the queue, {len(ids)} expected"
    assert set(queued) == set(ids), "the queue holds other ids than the failed ones"
    assert client.zcard(f"rq:failed:{QUEUE}") == 0, "jobs left in the failed registry"
    statuses = set()
    for start in range(0, len(ids), 10000):
        with client.pipeline(transaction=False) as pipe:
            for job_id in ids[start : start + 10000]:
                pipe.hget(f"rq:job:{job_id}", "status")
            statuses.update(pipe.execute())
    assert statuses == {b"queued"}, f"statuses after replay: {statuses}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    jobs = parser.parse_args().jobs
    server = RedisServer().start()
    try:
        client = server.client()
        t0 = time.perf_counter()
        ids = make_failed_jobs(client, jobs)
        print(f"made {jobs:,} failed jobs in {time.perf_counter() - t0:.1f} s")

        rq_cli = Path(sys.executable).parent / "rq"
        t0 = time.perf_counter()
        subprocess.run([str(rq_cli), "requeue", "--all", "--queue", QUEUE, "-u", server.url], check=True)
        baseline = time.perf_counter() - t0
        verify(client, ids)
        print(f"rq requeue --all:   {jobs:,} jobs in {baseline:6.2f} s = {jobs / baseline:>10,.0f} jobs/s (verified)")

        ids = make_failed_jobs(client, jobs)
        t0 = time.perf_counter()
        report = replay(client, source="failed", queues=[QUEUE], selection=Selection())
        ours = time.perf_counter() - t0
        assert report.replayed == jobs, report.as_dict()
        verify(client, ids)
        print(f"task_requeue (Lua): {jobs:,} jobs in {ours:6.2f} s = {jobs / ours:>10,.0f} jobs/s (verified)")
        again = replay(client, source="failed", queues=[QUEUE], selection=Selection())
        assert again.replayed == 0
        print(f"ratio: {baseline / ours:.1f}x faster than rq requeue --all (goal: 50x); a second run replayed 0")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
