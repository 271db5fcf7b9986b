"""queue_pause against real `rq worker` 2.x processes: the ledger proves no job starts while paused."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_rq_worker

pytestmark = pytest.mark.slow


def _blocked(client, n):
    return sum(1 for c in client.client_list() if c["cmd"] in ("blpop", "blmove")) >= n


class Producer(threading.Thread):
    """Enqueues one job every `every` seconds on each queue until stopped."""

    def __init__(self, client, ledger, queues, every=0.02):
        super().__init__(daemon=True)
        from rq import Queue

        self.queues = [Queue(q, connection=client) for q in queues]
        self.ledger, self.every, self.halt = ledger, every, threading.Event()
        self.count = 0

    def run(self):
        while not self.halt.is_set():
            for queue in self.queues:
                token = f"{queue.name}-{self.count}-{uuid.uuid4().hex[:6]}"
                self.ledger.note_enqueued(token)
                queue.enqueue("sampleapp.tasks.work", token)
            self.count += 1
            time.sleep(self.every)

    def stop(self):
        self.halt.set()
        self.join()


@pytest.fixture
def workers(redis_server):
    started = []

    def start(queues, name, **kw):
        worker = start_rq_worker(redis_server.url, queues, name, **kw)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def _args(redis_server, **kw):
    return {"backend": "rq", "redis_url": redis_server.url, **kw}


def test_no_job_starts_while_paused_even_on_an_idle_blocked_worker(redis_server, redis_client, ledger, workers):
    workers(["busy"], "pool:v1:1")
    idle = workers(["idle"], "pool:v1:2")
    producer = Producer(redis_client, ledger, ["busy"])
    producer.start()
    try:
        assert wait_until(lambda: len(ledger.starts()) >= 5)
        assert _blocked(redis_client, 1), "the idle worker must be blocked in its dequeue before the pause"
        result = run_module("queue_pause", _args(redis_server, queues=["busy", "idle"], state="paused"))
        t_return = time.time()
        assert not result.failed, result.msg
        assert result.changed and result["paused"] == ["busy", "idle"]
        assert "pool:v1:2" in result["woken_workers"]
        producer.queues.append(type(producer.queues[0])("idle", connection=redis_client))  # now feed the idle one
        again = run_module("queue_pause", _args(redis_server, queues=["busy", "idle"], state="paused"))
        assert not again.failed and not again.changed
        time.sleep(0.5)
        t_resume = time.time()
        assert ledger.starts_between(t_return, t_resume, {"busy", "idle"}) == []
        assert redis_client.llen("rq:queue:idle") > 0 and idle.alive()
        resumed = run_module("queue_pause", _args(redis_server, queues=["busy", "idle"], state="resumed"))
        assert not resumed.failed and resumed.changed and resumed["paused"] == []
    finally:
        producer.stop()
    assert wait_until(lambda: not ledger.lost(), timeout=30), f"lost after resume: {len(ledger.lost())}"
    assert ledger.duplicated() == {}
    assert {s["queue"] for s in ledger.starts() if s["t"] > t_resume} == {"busy", "idle"}
    assert not redis_client.keys("rq:job:queueops-wake-*")


def test_drain_waits_for_running_jobs_and_reports_their_exact_count(redis_server, redis_client, ledger, workers):
    from rq import Queue

    workers(["default"], "pool:v1:1")
    workers(["default"], "pool:v1:2")
    queue = Queue("default", connection=redis_client)
    for token in ("slow-1", "slow-2"):
        queue.enqueue("sampleapp.tasks.work", token, 4)
    assert wait_until(lambda: len(ledger.starts()) == 2)
    result = run_module("queue_pause", _args(redis_server, queues=["default"], state="drained", timeout=20))
    assert not result.failed, result.msg
    assert result["in_flight_at_start"] == 2 and result["left"] == 0 and result["stragglers"] == []
    assert {t["worker"] for t in result["in_flight_at_start_tasks"]} == {"pool:v1:1", "pool:v1:2"}
    assert ledger.done_counts() == {"slow-1": 1, "slow-2": 1}
    assert 0 < result["elapsed"] < 8


def test_drain_timeout_fails_and_names_the_long_job(redis_server, redis_client, ledger, workers):
    from rq import Queue

    workers(["default"], "pool:v1:1")
    job = Queue("default", connection=redis_client).enqueue("sampleapp.tasks.work", "long", 30)
    assert wait_until(lambda: len(ledger.starts()) == 1)
    result = run_module("queue_pause", _args(redis_server, queues=["default"], state="drained", timeout=0.5))
    assert result.failed
    assert result.msg == (f"queues default not drained after 0.5 s: 1 task(s) still running: {job.id} on pool:v1:1")
    assert result["stragglers"][0]["job_id"] == job.id and result["left"] == 1
    assert redis_client.exists("rq:suspended")


def test_ttl_resumes_by_itself(redis_server, redis_client, ledger, workers):
    from rq import Queue

    workers(["default"], "pool:v1:1")
    result = run_module("queue_pause", _args(redis_server, queues=["default"], ttl=1))
    assert not result.failed and result["suspension_ttl"] in (0, 1)
    Queue("default", connection=redis_client).enqueue("sampleapp.tasks.work", "after-ttl")
    ledger.note_enqueued("after-ttl")
    assert wait_until(lambda: not ledger.lost(), timeout=10)
    assert not redis_client.exists("rq:suspended")


def test_check_mode_changes_nothing_and_resume_is_idempotent(redis_server, redis_client):
    redis_client.sadd("rq:queues", "rq:queue:default")  # a queue RQ knows, with no worker now
    checked = run_module("queue_pause", _args(redis_server, queues=["default"]), check=True, diff=True)
    assert not checked.failed and checked.changed
    assert checked["diff"] == {"before": {"default": "consuming"}, "after": {"default": "paused"}}
    assert not redis_client.exists("rq:suspended")
    assert run_module("queue_pause", _args(redis_server, queues=["default"])).changed
    assert redis_client.ttl("rq:suspended") == -1
    assert run_module("queue_pause", _args(redis_server, queues=["default"], state="resumed")).changed
    again = run_module("queue_pause", _args(redis_server, queues=["default"], state="resumed"))
    assert not again.failed and not again.changed
    events = redis_client.xrange("queueops:events")
    assert [e[1][b"action"] for e in events] == [b"paused", b"resumed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"backend": "sidekiq", "queues": ["a"]}, "value of backend must be one of: rq, celery, got: sidekiq"),
        ({"backend": "rq", "queues": []}, "queues must name at least one queue"),
        ({"backend": "rq", "queues": ["a"], "redis_url": "redis://127.0.0.1:1/0"}, "Cannot reach Redis at "),
    ],
)
def test_bad_input_fails_clearly_and_changes_nothing(redis_server, redis_client, args, message):
    args = {"redis_url": redis_server.url, **args}
    result = run_module("queue_pause", args)
    assert result.failed and message in result.msg
    assert not redis_client.exists("rq:suspended")


def test_wrong_password_fails_clearly(redis_server_with_password):
    url = redis_server_with_password.url.replace("s3cret-test-pass", "wrong")
    result = run_module("queue_pause", {"backend": "rq", "queues": ["a"], "redis_url": url})
    assert result.failed and "refused the credentials" in result.msg
    assert "wrong" not in result.msg
    assert not redis_server_with_password.client().exists("rq:suspended")
