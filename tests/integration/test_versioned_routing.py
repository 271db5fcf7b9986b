"""Versioned routing on real workers: what waits on a release queue ``<queue>@<version>`` whose
release was rolled back stays parked (queue_info counts it per release, no older worker runs it),
and task_requeue source=queue hands it to the fixed release, which runs each task once."""

from __future__ import annotations

import json

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import release_queue
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

pytestmark = pytest.mark.slow

NEW, FIXED = release_queue("orders", "1.9.0"), release_queue("orders", "1.9.1")


def _runs_by_release(ledger, tokens: set[str]) -> dict[str, int]:
    runs: dict[str, int] = {}
    for start in ledger.starts():
        if start["token"] in tokens:
            runs[start["release"]] = runs.get(start["release"], 0) + 1
    return runs


def _parked(info, version: str) -> dict:
    return info["queues"]["orders"]["releases"][version]


def test_rq_tasks_of_a_rolled_back_release_stay_parked_until_the_fixed_release_takes_them(
    redis_server, redis_client, ledger, workers
):
    from rq import Queue

    new = start_rq_worker(redis_server.url, ["orders", NEW], "shop:1.9.0:1", release="1.9.0")
    workers.append(new)
    Queue(NEW, connection=redis_client).enqueue("sampleapp.tasks.work", "ran-on-1.9.0")
    ledger.note_enqueued("ran-on-1.9.0")
    assert wait_until(lambda: ledger.done_counts() == {"ran-on-1.9.0": 1})
    new.stop()  # 1.9.0 rolled back: 1.8.0 consumes the pool's queue only
    workers.append(start_rq_worker(redis_server.url, ["orders"], "shop:1.8.0:1", release="1.8.0"))
    tokens = {f"new-{i}" for i in range(20)}
    for token in sorted(tokens):  # new code (still running somewhere) sends the new task type
        Queue(NEW, connection=redis_client).enqueue("sampleapp.tasks.work", token)
    ledger.note_enqueued(*tokens)
    args = {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url}

    info = run_module("queue_info", args)

    assert not info.failed, info.msg
    assert _parked(info, "1.9.0") == {"queue": NEW, "depth": 20, "consumers": 0, "parked": 20}
    assert info["queues"]["orders"]["parked"] == 20
    assert any(f"20 task(s) of release 1.9.0 are parked on {NEW}" in w for w in info["warnings"])

    move = {"backend": "rq", "source": "queue", "from_queue": NEW, "to_queue": FIXED, "redis_url": redis_server.url}
    preview = run_module("task_requeue", move, check=True)
    assert preview["replayed"] == 20 and redis_client.llen(f"rq:queue:{NEW}") == 20
    moved = run_module("task_requeue", move)
    assert not moved.failed and moved.changed and moved["replayed"] == 20, moved.msg
    assert _runs_by_release(ledger, tokens) == {}, "no task of 1.9.0 ran on older code"
    workers.append(start_rq_worker(redis_server.url, ["orders", FIXED], "shop:1.9.1:1", release="1.9.1"))

    assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    assert _runs_by_release(ledger, tokens) == {"1.9.1": 20} and ledger.duplicated() == {}
    after = run_module("queue_info", args)
    assert _parked(after, "1.9.1") == {"queue": FIXED, "depth": 0, "consumers": 1, "parked": 0}
    assert _parked(after, "1.9.0")["parked"] == 0 and after["queues"]["orders"]["parked"] == 0
    assert not run_module("task_requeue", move).changed


def test_celery_tasks_of_a_rolled_back_release_stay_parked_and_move_rerouted_to_the_fixed_release(
    redis_server, redis_client, ledger, workers
):
    from celery import Celery

    app = Celery(broker=redis_server.url, set_as_current=False)
    new = start_celery_worker(redis_server.url, ["orders", NEW], "shop:1.9.0:1@test", release="1.9.0")
    workers.append(new)
    new.stop()  # 1.9.0 rolled back: 1.8.0 consumes the pool's queue only
    workers.append(start_celery_worker(redis_server.url, ["orders"], "shop:1.8.0:1@test", release="1.8.0"))
    tokens = [f"new-{i}" for i in range(20)]
    ids = {
        app.send_task("sampleapp.work", args=[t], queue=NEW, priority=(5 if i % 4 == 0 else None)).id
        for i, t in enumerate(tokens)
    }
    ledger.note_enqueued(*tokens)
    args = {"backend": "celery", "queues": ["orders"], "redis_url": redis_server.url}

    info = run_module("queue_info", args)

    assert not info.failed, info.msg
    assert _parked(info, "1.9.0") == {"queue": NEW, "depth": 20, "consumers": 0, "parked": 20}
    assert any(f"20 task(s) of release 1.9.0 are parked on {NEW}" in w for w in info["warnings"])

    move = {
        "backend": "celery",
        "source": "queue",
        "from_queue": NEW,
        "to_queue": FIXED,
        "limit": 15,
        "redis_url": redis_server.url,
    }
    preview = run_module("task_requeue", move, check=True)
    assert preview["replayed"] == 15 and set(preview["ids"]) <= ids
    moved = run_module("task_requeue", move)
    assert not moved.failed and moved["replayed"] == 15 and set(moved["ids"]) <= ids, moved.msg
    rest = run_module("task_requeue", {**move, "limit": None})
    assert rest["replayed"] == 5 and set(moved["ids"]) | set(rest["ids"]) == ids
    envelope = json.loads(redis_client.lindex(FIXED, 0))
    assert envelope["properties"]["delivery_info"] == {"exchange": FIXED, "routing_key": FIXED}
    assert redis_client.sismember(f"_kombu.binding.{FIXED}", f"{FIXED}\x06\x16\x06\x16{FIXED}")
    assert _runs_by_release(ledger, set(tokens)) == {}, "no task of 1.9.0 ran on older code"
    workers.append(start_celery_worker(redis_server.url, ["orders", FIXED], "shop:1.9.1:1@test", release="1.9.1"))

    assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    assert _runs_by_release(ledger, set(tokens)) == {"1.9.1": 20} and ledger.duplicated() == {}
    assert {s["queue"] for s in ledger.starts() if s["token"] in set(tokens)} == {FIXED}
    after = run_module("queue_info", args)
    assert after["queues"]["orders"]["releases"] == {
        "1.9.0": {"queue": NEW, "depth": 0, "consumers": 0, "parked": 0},
        "1.9.1": {"queue": FIXED, "depth": 0, "consumers": 1, "parked": 0},
    }


def test_celery_move_of_a_queue_onto_itself_is_refused_and_abandoned_stays_rq_only(redis_server):
    result = run_module(
        "task_requeue",
        {"backend": "celery", "source": "abandoned", "queues": ["orders"], "redis_url": redis_server.url},
    )
    assert result.failed and "source=abandoned is RQ only" in result.msg
    same = run_module(
        "task_requeue",
        {"backend": "celery", "source": "queue", "from_queue": NEW, "to_queue": NEW, "redis_url": redis_server.url},
    )
    assert same.failed and "same queue" in same.msg
