"""Transactional tasks on real RQ and Celery workers and a real PostgreSQL: the sample app's
``transfer`` writes in one transaction keyed by its task id (sampleapp/store.py). A worker killed
half-way leaves nothing visible; its redelivery, and the replay of a task a bad release failed after
its writes committed, each run the task twice and apply it once. The ledger's "run twice" is counted
beside the database's "applied twice"."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from rq import Queue

from tests.support.paths import SAMPLE_APP
from tests.support.postgres_server import PostgresServer
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

sys.path.insert(0, str(SAMPLE_APP))
from sampleapp import store  # the app runs from source here

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    store.create_schema(server.dsn)
    yield server
    server.stop()


@pytest.fixture
def db(postgres):
    """A connection to a database emptied for the test."""
    with store.connect(postgres.dsn) as conn:
        conn.execute("TRUNCATE sampleapp_applied, sampleapp_journal")
        yield conn


def _env(postgres) -> dict[str, str]:
    return {store.DSN: postgres.dsn}


def _in_transaction(db) -> int:
    """Sessions inside a transaction that waits for its next statement: a transfer in its work."""
    return db.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'").fetchone()[0]


def _runs(ledger, tokens) -> dict[str, int]:
    runs = dict.fromkeys(tokens, 0)
    for start in ledger.starts():
        if start["token"] in runs:
            runs[start["token"]] += 1
    return runs


def _enqueue_rq(redis_client, ledger, tokens, seconds: float = 0.0) -> None:
    queue = Queue("orders", connection=redis_client)
    for token in tokens:
        queue.enqueue("sampleapp.tasks.transfer", token, seconds, job_id=token, result_ttl=600, failure_ttl=600)
    ledger.note_enqueued(*tokens)


def test_the_audit_sees_a_task_applied_twice_and_a_partial_write(db):
    # What a task without the claim would leave: a run that committed each write on its own, killed
    # after its debit, then two complete runs.
    debit, credit = store.legs("naive-1")
    for account, amount in [debit, debit, credit, debit, credit]:
        db.execute(
            "INSERT INTO sampleapp_journal (task_id, account, amount) VALUES (%s, %s, %s)", ("naive-1", account, amount)
        )
    lone, _ = store.legs("naive-2")
    db.execute("INSERT INTO sampleapp_journal (task_id, account, amount) VALUES (%s, %s, %s)", ("naive-2", *lone))
    db.execute("INSERT INTO sampleapp_applied (task_id, release) VALUES ('naive-3', '1.0.0')")
    os.environ[store.DSN] = db.info.dsn
    try:
        assert store.transfer("good-1", 0, "1.0.0") is True
        assert store.transfer("good-1", 0, "1.0.0") is False
    finally:
        del os.environ[store.DSN]

    assert store.audit(db, "naive-") == {
        "applied": 0,
        "applied_twice": 0,
        "partial": 2,
        "claimed_empty": 1,
        "applied_ids": [],
    }
    first = db.execute("SELECT min(id) FROM sampleapp_journal WHERE task_id = 'naive-1'").fetchone()[0]
    db.execute("DELETE FROM sampleapp_journal WHERE id = %s", (first,))  # now two complete runs
    assert store.audit(db, "naive-1")["applied_twice"] == 1
    assert store.audit(db, "good-") == {
        "applied": 1,
        "applied_twice": 0,
        "partial": 0,
        "claimed_empty": 0,
        "applied_ids": ["good-1"],
    }


def test_the_task_needs_its_connection_string(redis_server, redis_client, ledger, workers):
    workers.append(start_rq_worker(redis_server.url, ["orders"], "shop:1.0.0:1", release="1.0.0"))
    _enqueue_rq(redis_client, ledger, ["nodsn-1"])
    assert wait_until(lambda: redis_client.zcard("rq:failed:orders") == 1, timeout=20)
    job = Queue("orders", connection=redis_client).fetch_job("nodsn-1")
    assert "needs SAMPLEAPP_PG_DSN" in (job.latest_result().exc_string or "")


def test_rq_a_worker_killed_mid_transaction_leaves_nothing_and_the_replays_apply_once(
    redis_server, redis_client, ledger, workers, postgres, db
):
    killed = start_rq_worker(redis_server.url, ["orders"], "shop:1.0.0:1", release="1.0.0", env=_env(postgres))
    workers.append(killed)
    _enqueue_rq(redis_client, ledger, ["tx-killed"], seconds=5)
    assert wait_until(lambda: _runs(ledger, ["tx-killed"])["tx-killed"] == 1)
    assert wait_until(lambda: _in_transaction(db) == 1)
    assert store.visible(db, "tx-killed") == 0  # its marker and debit are written, uncommitted: nobody sees them
    killed.kill()
    assert wait_until(lambda: _in_transaction(db) == 0)
    assert store.visible(db, "tx-killed") == 0  # rolled back with the connection

    # A bad release fails a third of its tasks after their writes committed.
    bad = start_rq_worker(
        redis_server.url, ["orders"], "shop:1.2.0:1", release="1.2.0", fail_every=3, env=_env(postgres)
    )
    workers.append(bad)
    tokens = [f"tx-{i}" for i in range(30)]
    _enqueue_rq(redis_client, ledger, tokens)
    assert wait_until(lambda: sum(ledger.done_counts().values()) + sum(ledger.failed_counts().values()) == 30)
    bad.stop()
    failed = set(ledger.failed_counts())
    assert failed and store.audit(db, "tx-")["applied"] == 30  # failed or not, every one was applied

    # The rollback: a good release replays what the bad one failed and what the killed worker abandoned.
    workers.append(start_rq_worker(redis_server.url, ["orders"], "shop:1.0.0:2", release="1.0.0", env=_env(postgres)))
    for source in ("failed", "abandoned"):
        replay = run_module(
            "task_requeue", {"backend": "rq", "source": source, "queues": ["orders"], "redis_url": redis_server.url}
        )
        assert not replay.failed, replay.msg
    assert wait_until(lambda: set(ledger.done_counts()) == {"tx-killed", *tokens}, timeout=30)

    runs = _runs(ledger, ["tx-killed", *tokens])
    run_twice = sorted(t for t, n in runs.items() if n > 1)
    assert run_twice == sorted({"tx-killed", *failed})  # the killed one and each failed one ran twice
    assert set(ledger.done_counts().values()) == {1}
    assert store.audit(db, "tx") == {
        "applied": 31,
        "applied_twice": 0,
        "partial": 0,
        "claimed_empty": 0,
        "applied_ids": sorted(["tx-killed", *tokens]),
    }


def test_celery_a_pool_process_killed_mid_transaction_leaves_nothing_and_the_redelivery_applies_once(
    redis_server, redis_client, ledger, workers, postgres, db
):
    from celery import Celery

    app = Celery("producer", broker=redis_server.url, set_as_current=False)
    worker = start_celery_worker(
        redis_server.url, ["orders"], "shop:1.0.0:1", release="1.0.0", concurrency=1, env=_env(postgres)
    )
    workers.append(worker)
    app.send_task("sampleapp.transfer", args=["ctx-killed", 5], queue="orders", task_id="ctx-killed")
    ledger.note_enqueued("ctx-killed")
    assert wait_until(lambda: _runs(ledger, ["ctx-killed"])["ctx-killed"] == 1)
    assert wait_until(lambda: _in_transaction(db) == 1)
    assert store.visible(db, "ctx-killed") == 0
    child = next(s for s in ledger.starts() if s["token"] == "ctx-killed")["pid"]
    os.kill(child, signal.SIGKILL)  # as the OOM killer would: the worker gets WorkerLostError and hands it back

    # Redelivered at once (acks_late, task_reject_on_worker_lost); a second message of the same id
    # (a replay, or the visibility timeout's redelivery) runs it a third time.
    assert wait_until(lambda: ledger.done_counts().get("ctx-killed") == 1, timeout=45)
    app.send_task("sampleapp.transfer", args=["ctx-killed", 0], queue="orders", task_id="ctx-killed")
    assert wait_until(
        lambda: _runs(ledger, ["ctx-killed"])["ctx-killed"] == 3 and ledger.done_counts()["ctx-killed"] == 2
    )

    assert store.audit(db, "ctx-") == {
        "applied": 1,
        "applied_twice": 0,
        "partial": 0,
        "claimed_empty": 0,
        "applied_ids": ["ctx-killed"],
    }
