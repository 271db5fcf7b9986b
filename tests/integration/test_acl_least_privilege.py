"""Every Redis module runs as an ACL user with exactly the rule its documentation gives, against real
workers; the same user without one of those rules is refused in words (which user, at which
host:port/db, which command, key or channel, needed for what) with nothing changed.

The rules are read from each module's DOCUMENTATION (the notes that begin with "Redis ACL"), so the
documentation and this test cannot drift apart.
"""

from __future__ import annotations

import importlib
import json
import re
import secrets
import socket
import threading
import time

import pytest
import yaml

from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_celery_worker, start_rq_worker

pytestmark = pytest.mark.slow

# "Redis ACL (rq): the user needs C(<rule>). ..." -- the backend is absent for config_snapshot.
NOTE = re.compile(r"Redis ACL(?: \((?P<backend>\w+)\))?: the user needs C\((?P<rule>[^)]*)\)")
# redis-py names itself with CLIENT SETINFO on connect and ignores a refusal: not a right a module needs.
IGNORED_DENIALS = {"client|setinfo"}
NODE = f"shop:1.0.0:1@{socket.gethostname()}"
RQ_WORKER = "shop:1.0.0:1"


def documented_rule(module: str, backend: str | None = None, *, queues=(), patterns=(), db: int = 0) -> list[str]:
    """The ACL rule of ``module`` (and ``backend``) from its DOCUMENTATION, placeholders filled in."""
    loaded = importlib.import_module(f"ansible_collections.queueops.rollback.plugins.modules.{module}")
    notes = yaml.safe_load(loaded.DOCUMENTATION).get("notes", [])
    rules = {m["backend"]: m["rule"] for m in (NOTE.match(note) for note in notes) if m}
    assert backend in rules, f"{module} documents no Redis ACL rule for {backend}: {sorted(map(str, rules))}"
    tokens = []
    for token in rules[backend].split():
        token = token.replace("<db>", str(db))
        if "<queue>" in token:
            tokens += [token.replace("<queue>", queue) for queue in queues]
        elif "<pattern>" in token:
            tokens += [token.replace("<pattern>", pattern) for pattern in patterns]
        else:
            assert "<" not in token, f"unknown placeholder in {token}"
            tokens.append(token)
    return tokens


class AclUsers:
    """ACL users created on the session's redis-server, deleted when the test ends."""

    def __init__(self, server, client):
        self.server, self.client, self.names = server, client, []

    def create(self, name: str, rule: list[str]) -> str:
        """A user with exactly ``rule`` (nothing else: ``reset`` first); returns its redis_url."""
        password = secrets.token_hex(8)
        self.client.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *rule)
        self.names.append(name)
        self.client.execute_command("ACL", "LOG", "RESET")
        return f"redis://{name}:{password}@127.0.0.1:{self.server.port}/0"

    def denials(self, name: str) -> list[tuple[str, str]]:
        """(reason, object) of what the server refused the user, even where the module went on without it."""
        found = []
        for entry in self.client.acl_log(count=128):
            entry = {k: v.decode() if isinstance(v, bytes) else v for k, v in entry.items()}
            if entry["username"] == name and entry["object"] not in IGNORED_DENIALS:
                found.append((entry["reason"], entry["object"]))
        return found


@pytest.fixture
def acl(redis_server, redis_client):
    users = AclUsers(redis_server, redis_client)
    yield users
    for name in users.names:
        redis_client.acl_deluser(name)


def without(rule: list[str], token: str) -> list[str]:
    assert token in rule, f"{token} is not in the documented rule {rule}"
    return [t for t in rule if t != token]


def refusal(user: str, port: int, refused: str, doing: str, grant: str) -> str:
    """The message of every module for an ACL refusal (redis_connection.redis_errors)."""
    where = f"127.0.0.1:{port}/0 (redis_url)"
    return f"Redis user '{user}' at {where} may not {refused}, needed to {doing} (grant it with {grant})"


def no_event_warning(result) -> None:
    assert not any("could not record" in w for w in result.get("warnings", [])), result.get("warnings")


def events(redis_client) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _id, fields in redis_client.xrange("queueops:events")
    ]


# --- queue_pause ------------------------------------------------------------------------------


def test_queue_pause_rq_pauses_drains_and_resumes_as_the_documented_user(redis_server, redis_client, workers, acl):
    from rq import Queue

    workers.append(start_rq_worker(redis_server.url, ["orders"], RQ_WORKER))
    Queue("emails", connection=redis_client).enqueue("sampleapp.tasks.work", "waiting")  # another queue: collateral
    url = acl.create("qo-pause-rq", documented_rule("queue_pause", "rq"))
    args = {"backend": "rq", "queues": ["orders"], "redis_url": url}

    paused = run_module("queue_pause", {**args, "ttl": 120})
    assert not paused.failed and paused.changed, paused.msg
    assert paused["woken_workers"] == [RQ_WORKER] and paused["also_paused"]["queues"] == ["emails"]
    assert 0 < redis_client.ttl("rq:suspended") <= 120
    drained = run_module("queue_pause", {**args, "state": "drained", "timeout": 10})
    assert not drained.failed and drained["left"] == 0, drained.msg
    resumed = run_module("queue_pause", {**args, "state": "resumed"})
    assert not resumed.failed and resumed.changed and not redis_client.exists("rq:suspended"), resumed.msg

    for result in (paused, drained, resumed):
        no_event_warning(result)
    assert [e["action"] for e in events(redis_client)] == ["paused", "resumed"]
    assert acl.denials("qo-pause-rq") == []  # CLIENT LIST included: the liveness rule did not degrade


def test_queue_pause_rq_without_set_is_refused_in_words_and_suspends_nothing(redis_server, redis_client, workers, acl):
    workers.append(start_rq_worker(redis_server.url, ["orders"], RQ_WORKER))
    url = acl.create("qo-pause-rq-noset", without(documented_rule("queue_pause", "rq"), "+set"))

    refused = run_module("queue_pause", {"backend": "rq", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-pause-rq-noset", redis_server.port, "run the SET command", "pause the rq queues orders", "the ACL rule +set"
    )
    assert not redis_client.exists("rq:suspended") and not redis_client.exists("queueops:events")


def test_queue_pause_rq_refused_its_wake_up_job_takes_its_suspension_back(redis_server, redis_client, workers, acl):
    """The suspension is set before the idle workers are woken: refused LPUSH then, the pause is undone."""
    workers.append(start_rq_worker(redis_server.url, ["orders"], RQ_WORKER))
    assert wait_until(lambda: redis_client.hget(f"rq:worker:{RQ_WORKER}", "state") == b"idle")
    url = acl.create("qo-pause-rq-nolpush", without(documented_rule("queue_pause", "rq"), "+lpush"))

    refused = run_module("queue_pause", {"backend": "rq", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed, refused.msg
    assert "qo-pause-rq-nolpush" in refused.msg and "LPUSH" in refused.msg, refused.msg
    assert not redis_client.exists("rq:suspended"), "the half-done pause was taken back"
    assert not redis_client.keys("rq:job:queueops-wake-*")


def test_queue_pause_celery_refused_its_pause_record_pauses_no_worker(redis_server, redis_client, workers, acl):
    """The record is written before the broadcast: refused HSET, no worker stops consuming."""
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    rule = documented_rule("queue_pause", "celery", queues=["orders"])
    url = acl.create("qo-pause-celery-nohset", without(rule, "+hset"))

    refused = run_module("queue_pause", {"backend": "celery", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed, refused.msg
    assert "qo-pause-celery-nohset" in refused.msg and "HSET" in refused.msg, refused.msg
    info = run_module("queue_info", {"backend": "celery", "queues": ["orders"], "redis_url": redis_server.url})
    assert info["queues"]["orders"]["paused"] is False and info["queues"]["orders"]["consumers"] == 1


def test_queue_pause_celery_pauses_drains_and_resumes_as_the_documented_user(redis_server, redis_client, workers, acl):
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    url = acl.create("qo-pause-celery", documented_rule("queue_pause", "celery", queues=["orders"]))
    args = {"backend": "celery", "queues": ["orders"], "redis_url": url}

    paused = run_module("queue_pause", args)
    assert not paused.failed and paused.changed and paused["workers"] == {NODE: []}, paused.msg
    drained = run_module("queue_pause", {**args, "state": "drained", "timeout": 10})
    assert not drained.failed and drained["left"] == 0, drained.msg
    resumed = run_module("queue_pause", {**args, "state": "resumed"})
    assert not resumed.failed and resumed.changed and resumed["workers"] == {NODE: ["orders"]}, resumed.msg
    # A resume of what nobody paused reads the broker's bindings to know the queue (unknown_queues).
    again = run_module("queue_pause", {**args, "state": "resumed"})
    assert not again.failed and not again.changed, again.msg

    for result in (paused, drained, resumed):
        no_event_warning(result)
    assert [e["action"] for e in events(redis_client)] == ["paused", "resumed"]
    assert not redis_client.hexists("queueops:celery:paused", "orders")
    assert acl.denials("qo-pause-celery") == []


def test_queue_pause_celery_without_its_pause_records_is_refused_in_words_and_pauses_nothing(
    redis_server, redis_client, workers, acl
):
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    rule = documented_rule("queue_pause", "celery", queues=["orders"])
    url = acl.create("qo-pause-celery-norecord", without(rule, "~queueops:celery:paused"))

    refused = run_module("queue_pause", {"backend": "celery", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-pause-celery-norecord",
        redis_server.port,
        "access one of the keys it used",
        "pause the celery queues orders",
        "an ACL key pattern (~pattern) that covers it",
    )
    info = run_module("queue_info", {"backend": "celery", "queues": ["orders"], "redis_url": redis_server.url})
    assert info["queues"]["orders"]["paused"] is False and info["queues"]["orders"]["consumers"] == 1


def test_queue_pause_celery_without_the_pidbox_channel_is_refused_in_words_and_pauses_nothing(
    redis_server, redis_client, workers, acl
):
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    rule = documented_rule("queue_pause", "celery", queues=["orders"])
    url = acl.create("qo-pause-celery-nochan", without(rule, "&/0.celery.pidbox"))

    refused = run_module("queue_pause", {"backend": "celery", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-pause-celery-nochan",
        redis_server.port,
        "use one of the channels it used",
        "pause the celery queues orders",
        "an ACL channel pattern (&pattern) that covers it",
    )
    assert not redis_client.exists("queueops:celery:paused")
    info = run_module("queue_info", {"backend": "celery", "queues": ["orders"], "redis_url": redis_server.url})
    assert info["queues"]["orders"]["paused"] is False and info["queues"]["orders"]["consumers"] == 1


# --- queue_info -------------------------------------------------------------------------------


def test_queue_info_rq_reads_everything_as_the_documented_read_only_user(redis_server, redis_client, workers, acl):
    from rq import Queue

    worker = start_rq_worker(redis_server.url, ["orders"], RQ_WORKER)
    workers.append(worker)
    Queue("orders", connection=redis_client).enqueue("sampleapp.tasks.work", "slow", 30)
    assert wait_until(lambda: redis_client.zcard("rq:wip:orders") == 1)  # in flight: its job hash is read
    url = acl.create("qo-info-rq", documented_rule("queue_info", "rq"))

    for queues in (["orders"], None):  # named queues, and every queue RQ knows
        info = run_module("queue_info", {"backend": "rq", "redis_url": url, **({"queues": queues} if queues else {})})
        assert not info.failed, info.msg
        assert info["queues"]["orders"]["in_flight"] == 1 and info["queues"]["orders"]["consumers"] == 1
        assert [w["name"] for w in info["workers"]] == [RQ_WORKER] and info["workers"][0]["state"] == "busy"
    assert acl.denials("qo-info-rq") == []
    worker.kill()  # rather than wait for its 30 s job


def test_queue_info_rq_without_zcard_is_refused_in_words(redis_server, redis_client, workers, acl):
    workers.append(start_rq_worker(redis_server.url, ["orders"], RQ_WORKER))
    url = acl.create("qo-info-rq-nozcard", without(documented_rule("queue_info", "rq"), "+zcard"))

    refused = run_module("queue_info", {"backend": "rq", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-info-rq-nozcard",
        redis_server.port,
        "run the ZCARD command",
        "read the rq queues and workers",
        "the ACL rule +zcard",
    )


def test_queue_info_celery_reads_everything_as_the_documented_user(redis_server, redis_client, workers, acl):
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    url = acl.create("qo-info-celery", documented_rule("queue_info", "celery", queues=["orders", "emails"]))

    info = run_module("queue_info", {"backend": "celery", "queues": ["orders", "emails"], "redis_url": url})

    assert not info.failed, info.msg
    assert info["queues"]["orders"]["consumers"] == 1 and info["queues"]["orders"]["exists"] is True
    assert info["queues"]["emails"]["exists"] is False  # found by reading the broker's bindings
    assert [w["name"] for w in info["workers"]] == [NODE] and info["workers"][0]["pid"]
    assert acl.denials("qo-info-celery") == []


def test_queue_info_celery_without_the_unacked_hash_is_refused_in_words(redis_server, redis_client, workers, acl):
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    rule = documented_rule("queue_info", "celery", queues=["orders"])
    url = acl.create("qo-info-celery-nounacked", without(rule, "%R~unacked"))

    refused = run_module("queue_info", {"backend": "celery", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-info-celery-nounacked",
        redis_server.port,
        "access one of the keys it used",
        "read the celery queues and workers",
        "an ACL key pattern (~pattern) that covers it",
    )


# --- task_requeue -----------------------------------------------------------------------------


def _failed_rq_jobs(redis_server, redis_client, count: int = 2) -> list[str]:
    from rq import Queue

    bad = start_rq_worker(redis_server.url, ["orders"], "shop:2.0.0:1", release="2.0.0", fail_every=1)
    try:
        jobs = [Queue("orders", connection=redis_client).enqueue("sampleapp.tasks.work", f"f{i}") for i in range(count)]
        assert wait_until(lambda: redis_client.zcard("rq:failed:orders") == count)
    finally:
        bad.stop()
    return sorted(job.id for job in jobs)


def test_task_requeue_rq_replays_failed_abandoned_and_queued_jobs_as_the_documented_user(
    redis_server, redis_client, workers, acl
):
    from rq import Queue

    failed = _failed_rq_jobs(redis_server, redis_client)
    url = acl.create("qo-requeue-rq", documented_rule("task_requeue", "rq"))
    args = {"backend": "rq", "queues": ["orders"], "redis_url": url}

    preview = run_module("task_requeue", {**args, "failed_by": "2.0.0", "pool": "shop"}, check=True)
    assert not preview.failed and sorted(preview["ids"]) == failed, preview.msg
    replayed = run_module("task_requeue", {**args, "failed_by": "2.0.0", "pool": "shop"})
    assert not replayed.failed and sorted(replayed["ids"]) == failed, replayed.msg
    assert redis_client.zcard("rq:failed:orders") == 0 and redis_client.llen("rq:queue:orders") == 2

    killed = start_rq_worker(redis_server.url, ["slow"], "shop:2.0.0:2")
    stuck = Queue("slow", connection=redis_client).enqueue("sampleapp.tasks.work", "stuck", 60)
    assert wait_until(lambda: redis_client.zcard("rq:wip:slow") == 1)
    killed.kill()
    abandoned = run_module("task_requeue", {**args, "source": "abandoned", "queues": ["slow"]})
    assert not abandoned.failed and abandoned["ids"] == [stuck.id], abandoned.msg

    moved_args = {**args, "source": "queue", "from_queue": "orders", "to_queue": "later", "queues": []}
    preview = run_module("task_requeue", moved_args, check=True)
    assert not preview.failed and sorted(preview["ids"]) == failed, preview.msg
    moved = run_module("task_requeue", moved_args)
    assert not moved.failed and moved["replayed"] == 2, moved.msg
    assert redis_client.llen("rq:queue:orders") == 0 and redis_client.llen("rq:queue:later") == 2

    for result in (replayed, abandoned, moved):
        no_event_warning(result)
    assert [e["source"] for e in events(redis_client)] == ["failed", "abandoned", "queue"]
    assert acl.denials("qo-requeue-rq") == []


def test_task_requeue_rq_without_evalsha_is_refused_in_words_and_moves_nothing(redis_server, redis_client, acl):
    failed = _failed_rq_jobs(redis_server, redis_client)
    url = acl.create("qo-requeue-rq-noeval", without(documented_rule("task_requeue", "rq"), "+evalsha"))

    refused = run_module("task_requeue", {"backend": "rq", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-requeue-rq-noeval",
        redis_server.port,
        "run the EVALSHA command",
        "replay failed rq tasks",
        "the ACL rule +evalsha",
    )
    assert sorted(m.decode() for m in redis_client.zrange("rq:failed:orders", 0, -1)) == failed
    assert redis_client.llen("rq:queue:orders") == 0 and not redis_client.exists("queueops:events")


def _failed_celery_results(redis_client, count: int = 2) -> list[str]:
    """Results of failed tasks as a result_extended backend stores them."""
    ids = [f"failed-{i}" for i in range(count)]
    for i, task_id in enumerate(ids):
        meta = {
            "status": "FAILURE",
            "result": {"exc_type": "RuntimeError", "exc_message": ["bad release"], "exc_module": "builtins"},
            "traceback": "",
            "children": [],
            "date_done": f"2026-01-01T00:00:0{i}+00:00",
            "task_id": task_id,
            "name": "sampleapp.work",
            "args": [f"replayed-{i}"],
            "kwargs": {},
            "worker": "shop:2.0.0:1@test",
            "retries": 0,
            "queue": "orders",
        }
        redis_client.set(f"celery-task-meta-{task_id}", json.dumps(meta))
    return ids


def test_task_requeue_celery_republishes_failed_tasks_as_the_documented_user(
    redis_server, redis_client, ledger, workers, acl
):
    ids = _failed_celery_results(redis_client)
    url = acl.create("qo-requeue-celery", documented_rule("task_requeue", "celery", queues=["orders"]))
    args = {"backend": "celery", "queues": ["orders"], "redis_url": url}

    replayed = run_module("task_requeue", args)
    assert not replayed.failed and sorted(replayed["ids"]) == ids, replayed.msg
    again = run_module("task_requeue", args)
    assert not again.failed and (again.changed, again["replayed"]) == (False, 0), again.msg
    no_event_warning(replayed)
    assert redis_client.llen("orders") == 2
    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, concurrency=1))
    assert wait_until(lambda: ledger.done_counts() == {"replayed-0": 1, "replayed-1": 1})
    assert acl.denials("qo-requeue-celery") == []


def test_task_requeue_celery_without_the_replay_markers_is_refused_in_words_and_publishes_nothing(
    redis_server, redis_client, acl
):
    _failed_celery_results(redis_client)
    rule = documented_rule("task_requeue", "celery", queues=["orders"])
    url = acl.create("qo-requeue-celery-nomark", without(rule, "~queueops:replayed:*"))

    refused = run_module("task_requeue", {"backend": "celery", "queues": ["orders"], "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-requeue-celery-nomark",
        redis_server.port,
        "access one of the keys it used",
        "replay failed celery tasks",
        "an ACL key pattern (~pattern) that covers it",
    )
    assert redis_client.llen("orders") == 0 and not redis_client.keys("queueops:replayed:*")


# --- rollout_check ----------------------------------------------------------------------------


def _enqueue_once_observed(enqueue, redis_client, user: str, *, subscribed: bool = False) -> threading.Thread:
    """Run ``enqueue`` once the module holds a connection as ``user`` (``subscribed``: to the Celery
    events): its window has begun by then."""

    def observed() -> bool:
        return any(
            client.get("user") == user and (not subscribed or int(client.get("psub", 0)) > 0)
            for client in redis_client.client_list()
        )

    def produce() -> None:
        assert wait_until(observed, timeout=60)
        time.sleep(0.5)
        enqueue()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return thread


GATE = {"queues": ["orders"], "release": "1.0.0", "pool": "shop", "window": 4, "min_tasks": 3}


def test_rollout_check_rq_judges_as_the_documented_user(redis_server, redis_client, workers, acl):
    from rq import Queue

    workers.append(start_rq_worker(redis_server.url, ["orders"], RQ_WORKER, release="1.0.0"))
    url = acl.create("qo-gate-rq", documented_rule("rollout_check", "rq"))
    queue = Queue("orders", connection=redis_client)
    producer = _enqueue_once_observed(
        lambda: [queue.enqueue("sampleapp.tasks.work", f"t{i}") for i in range(3)], redis_client, "qo-gate-rq"
    )

    gate = run_module("rollout_check", {**GATE, "backend": "rq", "redis_url": url})
    producer.join()

    assert not gate.failed and gate["verdict"] == "healthy", gate.msg
    assert (gate["numbers"]["successes"], gate["numbers"]["live_workers"]) == (3, 1)
    no_event_warning(gate)
    assert [e["action"] for e in events(redis_client)] == ["healthy"]
    assert acl.denials("qo-gate-rq") == []


def test_rollout_check_rq_without_zrangebyscore_is_refused_in_words(redis_server, redis_client, workers, acl):
    workers.append(start_rq_worker(redis_server.url, ["orders"], RQ_WORKER, release="1.0.0"))
    url = acl.create("qo-gate-rq-norange", without(documented_rule("rollout_check", "rq"), "+zrangebyscore"))

    refused = run_module("rollout_check", {**GATE, "backend": "rq", "window": 0.5, "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-gate-rq-norange",
        redis_server.port,
        "run the ZRANGEBYSCORE command",
        "observe release 1.0.0 of pool shop on rq",
        "the ACL rule +zrangebyscore",
    )
    assert not redis_client.exists("queueops:events")


def test_rollout_check_celery_judges_as_the_documented_user(redis_server, redis_client, workers, acl):
    from celery import Celery

    workers.append(start_celery_worker(redis_server.url, ["orders"], NODE, release="1.0.0", concurrency=1))
    url = acl.create("qo-gate-celery", documented_rule("rollout_check", "celery", queues=["orders"]))
    app = Celery(broker=redis_server.url, set_as_current=False)
    producer = _enqueue_once_observed(
        lambda: [app.send_task("sampleapp.work", args=[f"t{i}"], queue="orders") for i in range(3)],
        redis_client,
        "qo-gate-celery",
        subscribed=True,
    )

    gate = run_module("rollout_check", {**GATE, "backend": "celery", "window": 6, "redis_url": url})
    producer.join()

    assert not gate.failed and gate["verdict"] == "healthy", gate.msg
    assert (gate["numbers"]["successes"], gate["numbers"]["live_workers"]) == (3, 1)
    no_event_warning(gate)
    assert acl.denials("qo-gate-celery") == []


# --- config_snapshot --------------------------------------------------------------------------


@pytest.fixture
def config_keys(redis_client):
    redis_client.set("cfg:limit", "10", ex=3600)
    redis_client.hset("cfg:routing", mapping={"eu": "orders-eu", "us": "orders-us"})
    redis_client.rpush("cfg:order", "a", "b")
    redis_client.sadd("cfg:flags", "fast")
    redis_client.zadd("cfg:weights", {"eu": 1, "us": 2})
    redis_client.set("other:key", "not snapshotted")
    return redis_client


def test_config_snapshot_takes_and_restores_keys_as_the_documented_user(redis_server, config_keys, tmp_path, acl):
    client = config_keys
    url = acl.create("qo-snapshot", documented_rule("config_snapshot", patterns=["cfg:*"]))
    args = {"name": "orders", "root": str(tmp_path), "redis_keys": ["cfg:*"], "redis_url": url}

    taken = run_module("config_snapshot", args)
    assert not taken.failed and taken.changed and taken["snapshot"]["keys"] == 5, taken.msg
    client.set("cfg:limit", "99")
    client.delete("cfg:routing")
    client.set("cfg:new", "added after")
    restored = run_module("config_snapshot", {**args, "state": "restored"})
    assert not restored.failed and restored.changed, restored.msg
    assert restored["restored"]["keys_restored"] == ["cfg:limit", "cfg:routing"]
    assert restored["restored"]["keys_deleted"] == ["cfg:new"]
    assert client.get("cfg:limit") == b"10" and client.ttl("cfg:limit") > 0
    assert client.hgetall("cfg:routing") == {b"eu": b"orders-eu", b"us": b"orders-us"}

    for result in (taken, restored):
        no_event_warning(result)
    assert [e["action"] for e in events(client)] == ["snapshot_taken", "snapshot_restored"]
    assert acl.denials("qo-snapshot") == []


def test_config_snapshot_without_its_key_pattern_is_refused_in_words_and_writes_nothing(
    redis_server, config_keys, tmp_path, acl
):
    rule = documented_rule("config_snapshot", patterns=["cfg:*"])
    url = acl.create("qo-snapshot-nokeys", without(rule, "~cfg:*"))

    refused = run_module(
        "config_snapshot", {"name": "orders", "root": str(tmp_path), "redis_keys": ["cfg:*"], "redis_url": url}
    )

    assert refused.failed and not refused.changed
    assert refused.msg == refusal(
        "qo-snapshot-nokeys",
        redis_server.port,
        "access one of the keys cfg:flags, cfg:limit, cfg:order, cfg:routing, cfg:weights",
        "read the keys to take snapshot orders",
        "an ACL key pattern (~pattern) that covers it",
    )
    assert list(tmp_path.iterdir()) == [] or not any(tmp_path.glob("orders/*/manifest.json"))
    assert not config_keys.exists("queueops:events")


def test_config_snapshot_restore_without_restore_is_refused_in_words_and_changes_no_key(
    redis_server, config_keys, tmp_path, acl
):
    client = config_keys
    args = {"name": "orders", "root": str(tmp_path), "redis_keys": ["cfg:*"], "redis_url": redis_server.url}
    assert not run_module("config_snapshot", args).failed
    client.set("cfg:limit", "99")
    rule = documented_rule("config_snapshot", patterns=["cfg:*"])
    url = acl.create("qo-snapshot-norestore", without(rule, "+restore"))

    refused = run_module("config_snapshot", {**args, "state": "restored", "redis_url": url})

    assert refused.failed and not refused.changed
    assert refused["restored"]["keys_restored"] == [] and refused["restored"]["keys_deleted"] == []
    assert (
        refusal(
            "qo-snapshot-norestore",
            redis_server.port,
            "run the RESTORE command",
            "restore and delete keys in one transaction to restore snapshot orders",
            "the ACL rule +restore",
        )
        in refused.msg
    )
    assert "so no key was changed" in refused.msg
    assert client.get("cfg:limit") == b"99"
