"""rollout_check: a good and a bad release side by side; the gate passes one and fails the other, numbers exact."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import worker_name
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

pytestmark = pytest.mark.slow

WINDOW = 9
TASKS = 45


def _gates(backend: str, redis_client, url: str, enqueue):
    """Both gates observe the same window while the tasks run; returns (good, bad) results."""
    base = {"backend": backend, "queues": ["orders"], "pool": "shop", "window": WINDOW, "redis_url": url}
    clients_before = len(redis_client.client_list())
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(run_module, "rollout_check", dict(base, release="1.0.0", min_tasks=5))
        bad = pool.submit(run_module, "rollout_check", dict(base, release="2.0.0", min_tasks=5))
        # Each module holds its Redis connection open while it observes: then its window has begun.
        assert wait_until(lambda: len(redis_client.client_list()) >= clients_before + 2)
        time.sleep(0.5)
        enqueue()
        return good.result(), bad.result()


@contextmanager
def load(backend: str, redis_server, redis_client, ledger, prefix: str):
    """Tasks sent to orders every 50 ms, each noted in the ledger, while the block runs; yields the tokens sent."""
    if backend == "rq":
        from rq import Queue

        queue = Queue("orders", connection=redis_client)

        def send(token):
            queue.enqueue("sampleapp.tasks.work", token)
    else:
        from celery import Celery

        app = Celery(broker=redis_server.url, set_as_current=False)

        def send(token):
            app.send_task("sampleapp.work", args=[token], queue="orders")

    stop, sent = [], []

    def run():
        while not stop:
            token = f"{backend}-{prefix}-{len(sent)}"
            ledger.note_enqueued(token)
            send(token)
            sent.append(token)
            time.sleep(0.05)

    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(run)
        try:
            yield sent
        finally:
            stop.append(True)
            loading.result()


def _expected(ledger, release: str) -> tuple[int, int]:
    started = {s["token"] for s in ledger.starts() if s["release"] == release}
    failed = started & set(ledger.failed_counts())
    return len(started) - len(failed), len(failed)


def _check(good, bad, ledger):
    assert not good.failed, good.msg
    assert good["healthy"] and good["verdict"] == "healthy"
    assert (good["numbers"]["successes"], good["numbers"]["failures"]) == _expected(ledger, "1.0.0")
    assert good["numbers"]["live_workers"] == 1
    assert bad.failed and bad["verdict"] == "unhealthy" and not bad["healthy"]
    successes, failures = _expected(ledger, "2.0.0")
    assert failures > 0
    assert (bad["numbers"]["successes"], bad["numbers"]["failures"]) == (successes, failures)
    ratio = failures / (successes + failures)
    assert bad.msg == (
        f"release 2.0.0 of pool shop is unhealthy: {failures} of {successes + failures} tasks failed "
        f"({ratio * 100:.1f}%), more than max_failure_ratio 5.0%"
    )
    assert good["numbers"]["tasks"] + bad["numbers"]["tasks"] == TASKS


def test_rq_gate_passes_the_good_release_and_fails_the_bad_one(redis_server, redis_client, ledger, workers):
    from rq import Queue

    workers.append(start_rq_worker(redis_server.url, ["orders"], worker_name("shop", "1.0.0", 0), release="1.0.0"))
    workers.append(
        start_rq_worker(redis_server.url, ["orders"], worker_name("shop", "2.0.0", 0), release="2.0.0", fail_every=3)
    )
    queue = Queue("orders", connection=redis_client)
    tokens = [f"rq-{i}" for i in range(TASKS)]

    def enqueue():
        for token in tokens:
            queue.enqueue("sampleapp.tasks.work", token)
        ledger.note_enqueued(*tokens)
        assert wait_until(lambda: len(ledger.done_counts()) + len(ledger.failed_counts()) == TASKS)

    good, bad = _gates("rq", redis_client, redis_server.url, enqueue)
    _check(good, bad, ledger)


def test_celery_gate_passes_the_good_release_and_fails_the_bad_one(redis_server, redis_client, ledger, workers):
    from celery import Celery

    workers.append(
        start_celery_worker(redis_server.url, ["orders"], worker_name("shop", "1.0.0", 0) + "@test", release="1.0.0")
    )
    workers.append(
        start_celery_worker(
            redis_server.url, ["orders"], worker_name("shop", "2.0.0", 0) + "@test", release="2.0.0", fail_every=3
        )
    )
    app = Celery(broker=redis_server.url, set_as_current=False)
    tokens = [f"cel-{i}" for i in range(TASKS)]

    def enqueue():
        for token in tokens:
            app.send_task("sampleapp.work", args=[token], queue="orders")
        ledger.note_enqueued(*tokens)
        assert wait_until(lambda: len(ledger.done_counts()) + len(ledger.failed_counts()) == TASKS)

    good, bad = _gates("celery", redis_client, redis_server.url, enqueue)
    _check(good, bad, ledger)


def test_quiet_window_is_inconclusive_and_missing_workers_fail(redis_server, redis_client):
    args = {"backend": "rq", "queues": ["orders"], "release": "9.9.9", "window": 0.5, "redis_url": redis_server.url}
    quiet = run_module("rollout_check", dict(args, min_workers=0, inconclusive_is="pass"))
    assert not quiet.failed and quiet["verdict"] == "inconclusive" and quiet["healthy"]
    nobody = run_module("rollout_check", args)
    assert nobody.failed and nobody["reasons"] == ["only 0 live worker(s) of release 9.9.9, at least 1 required"]
    bad_ratio = run_module("rollout_check", dict(args, max_failure_ratio=2))
    assert bad_ratio.failed and bad_ratio.msg == "max_failure_ratio must be between 0 and 1, not 2.0"


def test_check_mode_judges_the_same_and_records_no_event(redis_server, redis_client):
    from ansible_collections.queueops.rollback.plugins.module_utils.events import EVENTS_STREAM

    args = {
        "backend": "rq",
        "queues": ["orders"],
        "release": "9.9.9",
        "pool": "shop",
        "window": 0.2,
        "fail_when_unhealthy": False,
        "redis_url": redis_server.url,
    }
    checked = run_module("rollout_check", args, check=True)
    assert (checked.failed, checked["healthy"], redis_client.exists(EVENTS_STREAM)) == (False, False, 0)
    real = run_module("rollout_check", args)
    assert (real["verdict"], real["reason"]) == (checked["verdict"], checked["reason"])
    assert redis_client.xlen(EVENTS_STREAM) == 1


@pytest.mark.parametrize("backend", ["rq", "celery"])
def test_halt_unhealthy_stops_the_bad_release_at_the_verdict_and_nothing_else(
    backend, redis_server, redis_client, ledger, workers
):
    from ansible_collections.queueops.rollback.plugins.module_utils.events import EVENTS_STREAM

    suffix = "@test" if backend == "celery" else ""
    start = start_rq_worker if backend == "rq" else start_celery_worker
    good = start(redis_server.url, ["orders"], worker_name("shop", "1.0.0", 0) + suffix, release="1.0.0")
    bad = start(redis_server.url, ["orders"], worker_name("shop", "2.0.0", 0) + suffix, release="2.0.0", fail_every=3)
    workers.extend([good, bad])
    with load(backend, redis_server, redis_client, ledger, "halt") as sent:
        gate = run_module(
            "rollout_check",
            {"backend": backend, "queues": ["orders"], "pool": "shop", "release": "2.0.0", "window": 4,
             "min_tasks": 5, "halt_unhealthy": True, "redis_url": redis_server.url},
        )  # fmt: skip
        assert wait_until(lambda: not bad.alive(), timeout=20), "the bad release's worker did not stop"
        time.sleep(1.0)  # the good worker keeps taking tasks meanwhile
    assert gate.failed and gate["verdict"] == "unhealthy"
    assert gate["halted"] == [bad.name] and gate.changed
    assert good.alive(), "a worker of another release must not be stopped"
    assert not redis_client.exists("rq:suspended"), "nothing else on the db is paused"
    verdict_at = float(redis_client.xrevrange(EVENTS_STREAM, count=1)[0][1][b"time"])
    late = [s for s in ledger.starts() if s["release"] == "2.0.0" and s["t"] > verdict_at + 0.25]
    assert late == [], f"the bad release took tasks after its verdict: {late[:3]}"
    assert any(s["release"] == "1.0.0" and s["t"] > verdict_at + 0.25 for s in ledger.starts())
    assert wait_until(lambda: set(sent) <= set(ledger.done_counts()) | set(ledger.failed_counts()), timeout=30)


@pytest.mark.parametrize("backend", ["rq", "celery"])
def test_close_gates_unhealthy_closes_the_release_gates_at_the_verdict_and_its_workers_go_on(
    backend, redis_server, redis_client, ledger, workers
):
    from ansible_collections.queueops.rollback.plugins.module_utils.events import EVENTS_STREAM
    from ansible_collections.queueops.rollback.plugins.module_utils.gates import gates_key

    suffix = "@test" if backend == "celery" else ""
    start = start_rq_worker if backend == "rq" else start_celery_worker
    # 1.8.0: good on its old path; its new path behind the gate new_totals fails a third of the tasks
    env = {"SAMPLEAPP_GATES": "new_totals=3", "QUEUEOPS_POOL": "shop"}
    worker = start(redis_server.url, ["orders"], worker_name("shop", "1.8.0", 0) + suffix, release="1.8.0", env=env)
    workers.append(worker)
    base = {"pool": "shop", "redis_url": redis_server.url}
    opened = run_module("feature_gate", dict(base, gate="new_totals", version="1.8.0"))
    other = run_module("feature_gate", dict(base, gate="kept", version="1.7.0"))
    assert opened.changed and other.changed
    with load(backend, redis_server, redis_client, ledger, "gate") as sent:
        gate = run_module(
            "rollout_check",
            {"backend": backend, "queues": ["orders"], "pool": "shop", "release": "1.8.0", "window": 4,
             "min_tasks": 5, "close_gates_unhealthy": True, "redis_url": redis_server.url},
        )  # fmt: skip
        after = len(sent)
        assert wait_until(lambda: len(sent) >= after + 20, timeout=10)  # tasks go on coming
    assert gate.failed and gate["verdict"] == "unhealthy"
    assert gate["gates_closed"] == ["new_totals"] and gate["halted"] == [] and gate.changed
    assert redis_client.hkeys(gates_key("shop")) == [b"kept"], "only the gates of the release judged are closed"
    events = [fields for _id, fields in redis_client.xrange(EVENTS_STREAM)]
    closing = [e for e in events if e[b"action"] == b"gate closed"]
    assert [(e[b"module"], e[b"gate"], e[b"release"]) for e in closing] == [(b"rollout_check", b"new_totals", b"1.8.0")]
    verdict_at = float(next(e for e in events if e[b"action"] == b"unhealthy")[b"time"])
    closed_at = float(closing[0][b"time"])
    assert verdict_at <= closed_at < verdict_at + 0.5, "the gate is closed right after the verdict"
    starts = ledger.starts()
    assert any("new_totals" in s.get("gates", []) for s in starts)
    late = [s for s in starts if "new_totals" in s.get("gates", []) and s["t"] > closed_at]
    assert late == [], f"tasks took the new path after the gate closed: {late[:3]}"
    assert worker.alive(), "closing the gates leaves the release's workers running"
    assert wait_until(lambda: set(sent) <= set(ledger.done_counts()) | set(ledger.failed_counts()), timeout=30)
    # once closed, every task takes the old path, which finishes
    assert all(t in ledger.done_counts() for t in sent[after:])


def test_close_gates_unhealthy_needs_a_pool_and_a_version(redis_server):
    args = {"backend": "rq", "queues": ["orders"], "window": 0.1, "close_gates_unhealthy": True,
            "redis_url": redis_server.url}  # fmt: skip
    for release, pool in (("1.8.0", None), ("shop:1.8.*", "shop")):
        result = run_module("rollout_check", dict(args, release=release, **({"pool": pool} if pool else {})))
        assert result.failed
        assert result.msg == "close_gates_unhealthy needs pool and a version in release (the gates a release opened)"
