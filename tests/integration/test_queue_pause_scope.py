"""queue_pause says what a pause really stops, refuses queue names nobody knows, and survives the
worker restarts every deploy makes (real `rq worker` and `celery worker` processes)."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

pytestmark = pytest.mark.slow
PAUSED_KEY = "queueops:celery:paused"


def _rq(redis_server, **kw):
    return {"backend": "rq", "redis_url": redis_server.url, **kw}


def _celery(redis_server, **kw):
    return {"backend": "celery", "redis_url": redis_server.url, "queues": ["orders"], **kw}


def test_rq_pause_of_an_unknown_queue_is_refused_and_suspends_nothing(redis_server, redis_client, workers):
    workers.append(start_rq_worker(redis_server.url, ["orders"], "shop:1.0.0:1"))
    result = run_module("queue_pause", _rq(redis_server, queues=["ordres"]))
    assert result.failed and not result.changed
    assert result.msg.startswith("queue(s) ordres unknown at Redis db 0: no jobs, no registries and no worker")
    assert not redis_client.exists("rq:suspended")
    resumed = run_module("queue_pause", _rq(redis_server, queues=["ordres"], state="resumed"))
    assert resumed.failed and "ordres unknown" in resumed.msg
    allowed = run_module("queue_pause", _rq(redis_server, queues=["ordres"], allow_unknown_queues=True))
    assert not allowed.failed and allowed.changed and redis_client.exists("rq:suspended")


def test_rq_pause_names_the_other_queues_and_workers_the_suspension_stops(redis_server, redis_client, workers):
    from rq import Queue

    workers.append(start_rq_worker(redis_server.url, ["orders"], "shop:1.0.0:1"))
    workers.append(start_rq_worker(redis_server.url, ["emails"], "mail:2.0.0:1"))
    Queue("reports", connection=redis_client).enqueue("sampleapp.tasks.work", "waiting")  # jobs, no worker
    result = run_module("queue_pause", _rq(redis_server, queues=["orders"], ttl=60))
    assert not result.failed and result.changed, result.msg
    assert result["paused"] == ["orders"]
    assert result["also_paused"] == {"queues": ["emails", "reports"], "workers": ["mail:2.0.0:1"]}
    assert any("global to Redis db 0" in w and "emails, reports" in w for w in result["warnings"])
    resumed = run_module("queue_pause", _rq(redis_server, queues=["orders"], state="resumed"))
    assert resumed["also_resumed"] == {"queues": ["emails", "reports"], "workers": ["mail:2.0.0:1"]}


def test_rq_pause_warns_when_no_worker_is_left_to_start_while_suspended(redis_server, redis_client, workers, ledger):
    from rq import Queue

    worker = start_rq_worker(redis_server.url, ["orders"], "shop:1.0.0:1")
    workers.append(worker)
    Queue("orders", connection=redis_client).enqueue("sampleapp.tasks.work", "before")
    assert wait_until(lambda: ledger.done_counts() == {"before": 1})
    paused = run_module("queue_pause", _rq(redis_server, queues=["orders"]))
    assert not paused.failed and not any("refuses to start" in w for w in paused.get("warnings", []))
    worker.stop()  # a deploy stops the old workers while paused...
    again = run_module("queue_pause", _rq(redis_server, queues=["orders"]))
    assert not again.failed and not again.changed
    assert any("`rq worker` refuses to start while it is set" in w for w in again["warnings"])
    # ...and what the warning says is true: a new worker exits at once.
    with pytest.raises(RuntimeError, match="suspended"):
        workers.append(start_rq_worker(redis_server.url, ["orders"], "shop:1.1.0:1"))


@pytest.fixture
def host():
    return socket.gethostname()


def test_celery_resume_after_the_paused_workers_were_restarted_forgets_them(redis_server, redis_client, workers, host):
    old = start_celery_worker(redis_server.url, ["orders"], f"shop:1.0.0:1@{host}", concurrency=1)
    workers.append(old)
    paused = run_module("queue_pause", _celery(redis_server))
    assert not paused.failed and paused["paused"] == ["orders"], paused.msg
    old.stop()  # the deploy's warm restart: the new release's worker has a new node name
    new = f"shop:1.1.0:1@{host}"
    workers.append(start_celery_worker(redis_server.url, ["orders"], new, concurrency=1))

    resumed = run_module("queue_pause", _celery(redis_server, state="resumed"), diff=True)

    assert not resumed.failed, resumed.msg
    assert resumed["forgotten_workers"] == [f"shop:1.0.0:1@{host}"]
    assert resumed["missing_workers"] == []
    assert resumed["paused"] == [] and resumed["workers"] == {new: ["orders"]}
    assert resumed.changed and resumed["diff"] == {
        "before": {"orders": "consuming"},
        "after": {"orders": "consuming"},
    }
    assert not redis_client.hexists(PAUSED_KEY, "orders")
    # and the next pause and resume work on the new worker
    again = run_module("queue_pause", _celery(redis_server))
    assert not again.failed and again["workers"] == {new: []} and again["paused"] == ["orders"], again.msg
    back = run_module("queue_pause", _celery(redis_server, state="resumed"))
    assert not back.failed and back["workers"] == {new: ["orders"]} and back["forgotten_workers"] == []
    assert not run_module("queue_pause", _celery(redis_server, state="resumed")).changed


def test_celery_resume_forgets_a_worker_that_left_its_mailbox_once_its_unit_runs_another_release(
    redis_server, redis_client, workers, host
):
    # A worker stopped while Redis was away (a failover) cannot unbind its mailbox, as one killed.
    old_node, new = f"shop:1.0.0:1@{host}", f"shop:1.1.0:1@{host}"
    other_slot = f"shop:1.0.0:2@{host}"
    old = start_celery_worker(redis_server.url, ["orders"], old_node, concurrency=1)
    hung = start_celery_worker(redis_server.url, ["orders"], other_slot, concurrency=1)
    workers.extend([old, hung])
    assert run_module("queue_pause", _celery(redis_server))["paused"] == ["orders"]
    old.kill()
    os.kill(hung.pid, signal.SIGSTOP)  # silent, its unit not replaced: it may come back
    try:
        assert any(b"shop:1.0.0:1@" in m for m in redis_client.smembers("_kombu.binding.celery.pidbox"))
        workers.append(start_celery_worker(redis_server.url, ["orders"], new, concurrency=1))
        resumed = run_module(
            "queue_pause", _celery(redis_server, state="resumed", allow_missing_workers=True, reply_timeout=0.5)
        )
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    assert not resumed.failed, resumed.msg
    assert resumed["forgotten_workers"] == [old_node]
    assert resumed["missing_workers"] == [other_slot]
    assert redis_client.hget(PAUSED_KEY, "orders") == f'["{other_slot}"]'.encode()
    back = run_module("queue_pause", _celery(redis_server, state="resumed"))
    assert not back.failed and back["forgotten_workers"] == [] and back["missing_workers"] == [], back.msg
    assert not redis_client.hexists(PAUSED_KEY, "orders")


def test_celery_pause_while_a_restarted_worker_consumes_reports_what_live_workers_do(
    redis_server, redis_client, workers, host
):
    old = start_celery_worker(redis_server.url, ["orders"], f"shop:1.0.0:1@{host}", concurrency=1)
    workers.append(old)
    assert run_module("queue_pause", _celery(redis_server))["paused"] == ["orders"]
    old.stop()
    new = f"shop:1.1.0:1@{host}"
    workers.append(start_celery_worker(redis_server.url, ["orders"], new, concurrency=1))
    allowed = run_module("queue_pause", _celery(redis_server, state="resumed", allow_missing_workers=True))
    assert allowed["paused"] == [], "the restarted worker consumes orders: it is not paused"
    assert run_module("queue_pause", _celery(redis_server))["workers"] == {new: []}
    assert redis_client.hget(PAUSED_KEY, "orders") == f'["{new}"]'.encode()


def test_celery_resume_with_a_recorded_worker_that_is_alive_but_silent_fails_with_nothing_changed(
    redis_server, redis_client, workers, host
):
    node = f"shop:1.0.0:1@{host}"
    worker = start_celery_worker(redis_server.url, ["orders"], node, concurrency=1)
    workers.append(worker)
    assert run_module("queue_pause", _celery(redis_server))["paused"] == ["orders"]
    os.kill(worker.pid, signal.SIGSTOP)  # hung: no answer, but its mailbox is still on the broker
    try:
        result = run_module("queue_pause", _celery(redis_server, state="resumed", reply_timeout=0.5))
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert result.failed and not result.changed
    assert result["missing_workers"] == [node] and result["forgotten_workers"] == []
    assert "did not answer within 0.5 s; nothing changed" in result.msg
    assert redis_client.hget(PAUSED_KEY, "orders") == f'["{node}"]'.encode()
    assert wait_until(lambda: not run_module("queue_pause", _celery(redis_server, state="resumed")).failed)


def test_celery_pause_of_a_queue_no_worker_or_broker_knows_is_refused(redis_server, redis_client, workers, host):
    workers.append(start_celery_worker(redis_server.url, ["orders"], f"shop:1.0.0:1@{host}", concurrency=1))
    result = run_module("queue_pause", _celery(redis_server, queues=["ordres"]))
    assert result.failed and not result.changed
    assert result.msg.startswith("queue(s) ordres unknown at the Celery broker")
    assert redis_client.hlen(PAUSED_KEY) == 0
