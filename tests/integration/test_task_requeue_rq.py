"""task_requeue on RQ 2.x: replay exactly what a bad release failed, once; recover a killed worker's job."""

from __future__ import annotations

import time

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import worker_name
from ansible_collections.queueops.rollback.plugins.module_utils.replay import parse_time
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_rq_worker

pytestmark = pytest.mark.slow

GOOD = worker_name("shop", "1.0.0", 0)
BAD = worker_name("shop", "2.0.0", 0)


def _enqueue(redis_client, ledger, tokens, queue_name="orders", **kwargs):
    from rq import Queue

    queue = Queue(queue_name, connection=redis_client)
    ids = {queue.enqueue("sampleapp.tasks.work", token, **kwargs).id: token for token in tokens}
    ledger.note_enqueued(*tokens)
    return ids


def test_replays_exactly_what_the_bad_release_failed_once(redis_server, redis_client, ledger, workers):
    from rq import Queue

    bad = start_rq_worker(redis_server.url, ["orders"], BAD, release="2.0.0", fail_every=3)
    workers.append(bad)
    token_of = _enqueue(redis_client, ledger, [f"order-{i}" for i in range(30)])
    assert wait_until(lambda: len(ledger.done_counts()) + len(ledger.failed_counts()) == 30)
    bad.stop()
    failed_tokens = set(ledger.failed_counts())
    expected_ids = {job_id for job_id, token in token_of.items() if token in failed_tokens}
    assert 0 < len(expected_ids) < 30
    args = {"backend": "rq", "queues": ["orders"], "failed_by": "2.0.0", "pool": "shop", "redis_url": redis_server.url}

    other_release = run_module("task_requeue", dict(args, failed_by="1.0.0"), check=True)
    assert (other_release.failed, other_release["replayed"]) == (False, 0)
    preview = run_module("task_requeue", args, check=True)
    assert not preview.failed, preview.msg
    assert preview.changed and set(preview["ids"]) == expected_ids
    assert Queue("orders", connection=redis_client).failed_job_registry.count == len(expected_ids)  # nothing moved

    replay = run_module("task_requeue", args)
    assert not replay.failed, replay.msg
    assert replay.changed and replay["replayed"] == len(expected_ids)
    assert set(replay["ids"]) == expected_ids
    assert replay["sources"]["failed"]["skipped"] == {}
    queue = Queue("orders", connection=redis_client)
    assert sorted(queue.get_job_ids()) == sorted(expected_ids)  # listed once each
    assert {queue.fetch_job(job_id).get_status() for job_id in expected_ids} == {"queued"}

    again = run_module("task_requeue", args)
    assert (again.failed, again.changed, again["replayed"]) == (False, False, 0)

    workers.append(start_rq_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    assert ledger.duplicated() == {}
    assert set(ledger.done_counts()) == set(token_of.values())
    assert queue.failed_job_registry.count == 0
    events = redis_client.xrange("queueops:events")
    assert [e[1][b"action"] for e in events if e[1][b"module"] == b"task_requeue"] == [b"replayed"]


def test_task_names_and_limit_select_and_count(redis_server, redis_client, ledger, workers):
    workers.append(start_rq_worker(redis_server.url, ["orders"], BAD, release="2.0.0", fail_every=1))
    _enqueue(redis_client, ledger, [f"t-{i}" for i in range(5)])
    assert wait_until(lambda: len(ledger.failed_counts()) == 5)
    workers[0].stop()
    base = {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url}
    none = run_module("task_requeue", dict(base, task_names=["other.module.*"]), check=True)
    assert none["replayed"] == 0 and none["sources"]["failed"]["skipped"] == {"filtered out": 5}
    some = run_module("task_requeue", dict(base, task_names=["sampleapp.tasks.*"], limit=2))
    assert some["replayed"] == 2 and some["sources"]["failed"]["skipped"] == {"over the limit": 3}
    rest = run_module("task_requeue", dict(base, since="10m"))
    assert rest["replayed"] == 3


def test_abandoned_job_of_a_killed_worker_is_recovered_at_once_and_once(redis_server, redis_client, ledger, workers):
    bad = start_rq_worker(redis_server.url, ["orders"], BAD, release="2.0.0")
    workers.append(bad)
    token_of = _enqueue(redis_client, ledger, ["slow-1"], seconds=4)
    assert wait_until(lambda: len(ledger.starts()) == 1)
    bad.kill()
    assert redis_client.exists(f"rq:worker:{BAD}"), "its hash looks alive for minutes"
    workers.append(start_rq_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}

    # One liveness rule: queue_info and task_requeue both see the job as abandoned right away.
    info = run_module("queue_info", {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url})
    assert [t["job_id"] for t in info["abandoned"]["orders"]] == list(token_of)
    recovered = run_module("task_requeue", args)
    assert not recovered.failed, recovered.msg
    assert recovered["ids"] == list(token_of)
    assert wait_until(lambda: ledger.done_counts() == {"slow-1": 1}, timeout=45)
    assert [s["worker"] for s in ledger.starts()] == [BAD, GOOD]  # killed once, then run once
    again = run_module("task_requeue", args)
    assert (again.changed, again["replayed"]) == (False, 0)


def test_a_job_stuck_in_the_intermediate_queue_goes_back_to_the_front_and_runs_once(
    redis_server, redis_client, ledger, workers
):
    # RQ 2.x dequeues with BLMOVE into <queue>:intermediate, then adds the job to its started registry:
    # a worker that dies in between leaves the job parked there, which RQ only fails 10 minutes later.
    token_of = _enqueue(redis_client, ledger, ["parked-1", "next-1"])
    parked, queued = list(token_of)
    redis_client.lmove("rq:queue:orders", "rq:queue:orders:intermediate", "LEFT", "RIGHT")
    assert redis_client.lrange("rq:queue:orders:intermediate", 0, -1) == [parked.encode()]
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}
    checked = run_module("task_requeue", args, check=True)
    assert (checked["replayed"], checked["ids"]) == (1, [parked])
    assert redis_client.llen("rq:queue:orders:intermediate") == 1, "check mode moves nothing"
    recovered = run_module("task_requeue", args)
    assert not recovered.failed, recovered.msg
    assert (recovered["replayed"], recovered["ids"]) == (1, [parked])
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [parked.encode(), queued.encode()]
    assert redis_client.llen("rq:queue:orders:intermediate") == 0
    workers.append(start_rq_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    assert wait_until(lambda: ledger.done_counts() == {"parked-1": 1, "next-1": 1}, timeout=45)
    again = run_module("task_requeue", args)
    assert (again.changed, again["replayed"]) == (False, 0)


def test_a_job_a_worker_of_several_queues_popped_and_dropped_goes_back_to_the_front_and_runs_once(
    redis_server, redis_client, ledger, workers
):
    # A worker of several queues (versioned routing: orders and orders@<version>) dequeues with BLPOP,
    # with no intermediate queue: a warm shutdown while it is idle raises between the pop and its
    # started registry, and the job it popped says queued but sits in no queue, run by nobody.
    token_of = _enqueue(redis_client, ledger, ["dropped-1", "next-1"])
    dropped, queued = list(token_of)
    assert redis_client.blpop(["rq:queue:orders@9.9.9", "rq:queue:orders"], 1) == (
        b"rq:queue:orders",
        dropped.encode(),
    )
    assert redis_client.hget(f"rq:job:{dropped}", "status") == b"queued"
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}
    checked = run_module("task_requeue", args, check=True)
    assert (checked["replayed"], checked["ids"]) == (1, [dropped])
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [queued.encode()], "check mode moves nothing"
    recovered = run_module("task_requeue", args)
    assert not recovered.failed, recovered.msg
    assert (recovered["replayed"], recovered["ids"]) == (1, [dropped])
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [dropped.encode(), queued.encode()]
    workers.append(start_rq_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    assert wait_until(lambda: ledger.done_counts() == {"dropped-1": 1, "next-1": 1}, timeout=45)
    again = run_module("task_requeue", args)
    assert (again.changed, again["replayed"]) == (False, 0)


def test_a_parked_job_its_worker_started_is_left_to_it_and_replayed_once_when_it_died(
    redis_server, redis_client, ledger
):
    # RQ 2.x adds <job>:<execution> to the started registry before it forks the work horse, which
    # only then takes the job out of the intermediate queue: in between, the job is in both.
    import redis

    token_of = _enqueue(redis_client, ledger, ["forking-1"])
    (job_id,) = token_of
    redis_client.lmove("rq:queue:orders", "rq:queue:orders:intermediate", "LEFT", "RIGHT")
    redis_client.zadd("rq:wip:orders", {f"{job_id}:{'e' * 32}": time.time() + 240})
    redis_client.hset(f"rq:job:{job_id}", mapping={"status": "started", "worker_name": GOOD})
    redis_client.hset(f"rq:worker:{GOOD}", mapping={"birth": "2026-01-01T00:00:00.000000Z", "queues": "orders"})
    redis_client.sadd("rq:workers", f"rq:worker:{GOOD}")
    alive = redis.Redis.from_url(redis_server.url, client_name=GOOD)  # the worker's named connection
    alive.ping()
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}
    forking = run_module("task_requeue", args)
    assert not forking.failed, forking.msg
    assert forking["replayed"] == 0, forking["ids"]
    assert redis_client.lrange("rq:queue:orders:intermediate", 0, -1) == [job_id.encode()]

    alive.close()  # it died before its work horse took the job: abandoned, once
    died = run_module("task_requeue", args)
    assert not died.failed, died.msg
    assert (died["replayed"], died["ids"]) == (1, [job_id])
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [job_id.encode()]
    assert redis_client.llen("rq:queue:orders:intermediate") == 0


def test_a_job_whose_work_horse_never_prepared_it_is_judged_by_its_execution_and_replayed_once(
    redis_server, redis_client, ledger, workers
):
    # The worker writes the execution (naming itself) and the started entry before it forks; only
    # the work horse then writes the job's status and worker. A worker gone in between (killed, or
    # its Redis failed over under it) leaves a job that says "queued", names no worker and sits in
    # the intermediate queue and the started registry: neither stuck nor started, nothing ran it.
    import redis

    token_of = _enqueue(redis_client, ledger, ["unprepared-1"])
    (job_id,) = token_of
    execution = "f" * 32
    redis_client.lmove("rq:queue:orders", "rq:queue:orders:intermediate", "LEFT", "RIGHT")
    redis_client.hset(
        f"rq:execution:{job_id}:{execution}",
        mapping={"worker_name": BAD, "created_at": "2026-01-01T00:00:01.000000Z", "last_heartbeat": ""},
    )
    redis_client.zadd("rq:wip:orders", {f"{job_id}:{execution}": time.time() + 240})
    redis_client.hset(f"rq:worker:{BAD}", mapping={"birth": "2026-01-01T00:00:00.000000Z", "queues": "orders"})
    redis_client.sadd("rq:workers", f"rq:worker:{BAD}")
    assert redis_client.hmget(f"rq:job:{job_id}", "status", "worker_name") == [b"queued", b""]
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}
    info_args = {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url}

    alive = redis.Redis.from_url(redis_server.url, client_name=BAD)  # its worker is still there
    alive.ping()
    running = run_module("task_requeue", args)
    assert (running.failed, running["replayed"]) == (False, 0), running["ids"]
    assert run_module("queue_info", info_args)["abandoned"] == {}

    alive.close()
    info = run_module("queue_info", info_args)
    assert [(t["job_id"], t["worker"]) for t in info["abandoned"]["orders"]] == [(job_id, BAD)]
    checked = run_module("task_requeue", args, check=True)
    assert (checked["replayed"], checked["ids"]) == (1, [job_id]), "counted once, not also as stuck"
    assert redis_client.llen("rq:queue:orders:intermediate") == 1, "check mode moves nothing"
    recovered = run_module("task_requeue", args)
    assert not recovered.failed, recovered.msg
    assert (recovered["replayed"], recovered["ids"]) == (1, [job_id])
    assert recovered["sources"]["abandoned"]["skipped"] == {}
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [job_id.encode()]
    assert redis_client.llen("rq:queue:orders:intermediate") == 0
    assert redis_client.zcard("rq:wip:orders") == 0, "its started entry goes with it"
    workers.append(start_rq_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    assert wait_until(lambda: ledger.done_counts() == {"unprepared-1": 1}, timeout=45)
    assert [s["worker"] for s in ledger.starts()] == [GOOD]
    again = run_module("task_requeue", args)
    assert (again.changed, again["replayed"]) == (False, 0)


def test_a_replayed_job_a_live_worker_just_took_is_judged_by_its_run_not_by_its_failed_one(
    redis_server, redis_client, ledger, workers
):
    # The replay of what the bad release failed puts a job back on its queue; its hash still names
    # the worker of its failed run (gone: the bad release was stopped). A good worker takes it: it
    # moves the id to its intermediate queue and writes its run (execution, started entry) before
    # its work horse writes the job's status and worker. Judged in that window by the job hash, the
    # job looked parked by a gone worker and ran twice (faults F2 and F3, replay then abandoned).
    import redis

    token_of = _enqueue(redis_client, ledger, ["retaken-1"])
    (job_id,) = token_of
    redis_client.hset(f"rq:job:{job_id}", mapping={"worker_name": BAD, "started_at": ""})  # as the replay left it
    redis_client.lmove("rq:queue:orders", "rq:queue:orders:intermediate", "LEFT", "RIGHT")
    execution = "e" * 32
    taken_at = time.time()
    redis_client.hset(
        f"rq:execution:{job_id}:{execution}",
        mapping={"worker_name": GOOD, "created_at": taken_at, "last_heartbeat": taken_at},
    )
    redis_client.zadd("rq:wip:orders", {f"{job_id}:{execution}": taken_at + 240})
    birth = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(taken_at - 30))
    redis_client.hset(f"rq:worker:{GOOD}", mapping={"birth": birth, "queues": "orders"})
    redis_client.sadd("rq:workers", f"rq:worker:{GOOD}")
    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}
    info_args = {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url}

    alive = redis.Redis.from_url(redis_server.url, client_name=GOOD)
    alive.ping()
    info = run_module("queue_info", info_args)
    assert info["abandoned"] == {}
    for check in (True, False):
        left = run_module("task_requeue", args, check=check)
        assert (left.failed, left.changed, left["replayed"]) == (False, False, 0), left["ids"]
    assert redis_client.llen("rq:queue:orders") == 0 and redis_client.llen("rq:queue:orders:intermediate") == 1

    alive.close()  # the good worker dies before its work horse took the job: now it is abandoned
    info = run_module("queue_info", info_args)
    (abandoned,) = info["abandoned"]["orders"]
    assert (abandoned["job_id"], abandoned["worker"]) == (job_id, GOOD)
    assert abandoned["started_at"].endswith("Z"), "in RQ's own time format, as the job hash keeps it"
    assert abs(parse_time(abandoned["started_at"]) - taken_at) < 0.001
    recovered = run_module("task_requeue", args)
    assert (recovered.failed, recovered["replayed"], recovered["ids"]) == (False, 1, [job_id])
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [job_id.encode()]
    assert redis_client.llen("rq:queue:orders:intermediate") == 0


def test_a_job_judged_abandoned_that_a_live_worker_took_meanwhile_is_left_to_it(redis_server, redis_client, ledger):
    # The replay judges a started entry by the job's worker (gone), then moves it in a script: a
    # replayed job's hash names the worker of its failed run until the work horse of the worker that
    # took it since prepares it. The script checks again: that job now runs on a live worker.
    from ansible_collections.queueops.rollback.plugins.module_utils import rq_backend
    from ansible_collections.queueops.rollback.plugins.module_utils.replay import SourceReport

    token_of = _enqueue(redis_client, ledger, ["taken-1"])
    (job_id,) = token_of
    redis_client.lpop("rq:queue:orders")
    member = f"{job_id}:{'a' * 32}"
    redis_client.zadd("rq:wip:orders", {member: time.time() + 240})
    redis_client.hset(f"rq:job:{job_id}", mapping={"status": "started", "worker_name": GOOD})  # taken since
    report = SourceReport("abandoned")
    rq_backend._rq_run_batches(
        redis_client, "rq:wip:orders", [(member.encode(), job_id, BAD)], "", report, False, plain=False
    )
    assert report.replayed == 0 and report.skipped == {"taken by a live worker meanwhile": 1}
    assert redis_client.llen("rq:queue:orders") == 0 and redis_client.zscore("rq:wip:orders", member)


def test_jobs_rq_itself_failed_as_abandoned_are_replayed_and_a_failing_task_is_not(
    redis_server, redis_client, ledger, workers
):
    # RQ's maintenance (each worker runs it at start, then every 10 minutes) gets to abandoned jobs
    # on its own: a job parked in the intermediate queue for over a minute and a started entry past
    # its expiry both go to the failed registry, worker gone. Those never failed by their task.
    from rq import Queue, Worker
    from rq.registry import StartedJobRegistry

    bad = start_rq_worker(redis_server.url, ["orders"], BAD, release="2.0.0", fail_every=1)
    workers.append(bad)
    token_of = _enqueue(redis_client, ledger, ["fails-1"])
    assert wait_until(lambda: redis_client.zcard("rq:failed:orders") == 1)
    token_of |= _enqueue(redis_client, ledger, ["slow-1"], seconds=4)
    assert wait_until(lambda: len(ledger.starts()) == 2)
    bad.kill()
    token_of |= _enqueue(redis_client, ledger, ["parked-1"])
    parked = redis_client.lmove("rq:queue:orders", "rq:queue:orders:intermediate", "LEFT", "RIGHT").decode()

    queue = Queue("orders", connection=redis_client)
    janitor = Worker([queue], connection=redis_client, name="janitor")
    queue.intermediate_queue.cleanup(janitor, queue)  # first seen now
    redis_client.set(queue.intermediate_queue.get_first_seen_key(parked), time.time() - 120)
    queue.intermediate_queue.cleanup(janitor, queue)  # a minute later: failed
    StartedJobRegistry("orders", connection=redis_client).cleanup(timestamp=time.time() + 3600)
    by_token = {token: job_id for job_id, token in token_of.items()}
    assert {m.decode() for m in redis_client.zrange("rq:failed:orders", 0, -1)} == set(by_token.values())

    args = {"backend": "rq", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url}
    checked = run_module("task_requeue", args, check=True)
    assert sorted(checked["ids"]) == sorted([by_token["slow-1"], by_token["parked-1"]])
    recovered = run_module("task_requeue", args)
    assert not recovered.failed, recovered.msg
    assert recovered["replayed"] == 2
    assert redis_client.zrange("rq:failed:orders", 0, -1) == [by_token["fails-1"].encode()]
    workers.append(start_rq_worker(redis_server.url, ["orders"], GOOD, release="1.0.0"))
    assert wait_until(lambda: ledger.done_counts() == {"slow-1": 1, "parked-1": 1}, timeout=60)
    again = run_module("task_requeue", args)
    assert (again.changed, again["replayed"]) == (False, 0)


def test_source_queue_moves_everything_and_bad_options_are_refused(redis_server, redis_client, ledger):
    from rq import Queue

    ids = _enqueue(redis_client, ledger, [f"m-{i}" for i in range(3)], queue_name="orders-v2")
    moved = run_module(
        "task_requeue",
        {
            "backend": "rq",
            "source": "queue",
            "from_queue": "orders-v2",
            "to_queue": "orders",
            "redis_url": redis_server.url,
        },
    )
    assert moved["replayed"] == 3 and moved["ids"] == list(ids)
    queue = Queue("orders", connection=redis_client)
    assert queue.get_job_ids() == list(ids)
    assert {queue.fetch_job(i).origin for i in ids} == {"orders"}

    missing = run_module("task_requeue", {"backend": "rq", "redis_url": redis_server.url})
    assert missing.failed and missing.msg == "source=failed needs queues (the RQ queues whose registries are read)"
    bad_since = run_module(
        "task_requeue", {"backend": "rq", "queues": ["orders"], "since": "yesterday", "redis_url": redis_server.url}
    )
    assert bad_since.failed and bad_since.msg.startswith("since 'yesterday' is not a time")
