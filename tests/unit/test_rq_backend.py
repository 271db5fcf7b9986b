"""rq_backend against a real redis-server: key layouts of RQ 1.x and 2.x, workers, suspension."""

from __future__ import annotations

import pickle
import time
import zlib

from ansible_collections.queueops.rollback.plugins.module_utils import rq_backend


def test_started_members_of_both_layouts_parse_to_job_ids():
    assert rq_backend.parse_started_member(b"job-1:0123456789abcdef0123456789abcdef") == (
        "job-1",
        "0123456789abcdef0123456789abcdef",
    )
    assert rq_backend.parse_started_member(b"job-1") == ("job-1", None)
    assert rq_backend.parse_started_member("legacy:id:not-an-execution") == ("legacy:id:not-an-execution", None)


def test_started_entries_read_worker_from_the_job_hash(redis_client):
    redis_client.zadd("rq:wip:orders", {"a:" + "f" * 32: 1, "b": 2})
    redis_client.hset("rq:job:a", mapping={"worker_name": "orders:2.0:1", "started_at": "2024-01-01T00:00:00Z"})
    entries = {e.job_id: e for e in rq_backend.started_entries(redis_client, ["orders"])}
    assert entries["a"].worker == "orders:2.0:1" and entries["a"].execution_id == "f" * 32
    assert entries["b"].worker is None and entries["b"].execution_id is None


def test_list_workers_skips_dead_and_expired_and_filters_by_queue(redis_client):
    redis_client.sadd("rq:workers", "rq:worker:a:1:1", "rq:worker:b:1:1", "rq:worker:gone", "rq:worker:dead")
    redis_client.hset(
        "rq:worker:a:1:1",
        mapping={"queues": "orders,emails", "state": "idle", "last_heartbeat": "2024-05-06T07:08:09.123456Z"},
    )
    redis_client.hset("rq:worker:b:1:1", mapping={"queues": "other", "state": "busy"})
    redis_client.hset("rq:worker:dead", mapping={"queues": "orders", "death": "2024-01-01T00:00:00Z"})
    workers = rq_backend.list_workers(redis_client, ["orders"])
    assert [w.name for w in workers] == ["a:1:1"]
    facts = workers[0].as_dict()
    assert (facts["pool"], facts["release"], facts["queues"]) == ("a", "1", ["orders", "emails"])
    assert facts["last_heartbeat"] == "2024-05-06T07:08:09.123456+00:00"


def test_suspend_is_idempotent_keeps_its_ttl_and_resume_clears(redis_client):
    assert rq_backend.suspend(redis_client, ttl=30) is True
    assert rq_backend.suspend(redis_client, ttl=999) is False
    state = rq_backend.suspension(redis_client)
    assert state["suspended"] and 0 < state["ttl"] <= 30
    assert rq_backend.resume(redis_client) is True
    assert rq_backend.suspension(redis_client) == {"suspended": False, "ttl": None}


def test_wake_job_is_a_noop_at_the_head_and_is_taken_back(redis_client):
    redis_client.rpush("rq:queue:orders", "user-job")
    job_id = rq_backend.push_wake_job(redis_client, "orders")
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [job_id.encode(), b"user-job"]
    data = redis_client.hget(f"rq:job:{job_id}", "data")
    assert pickle.loads(zlib.decompress(data)) == ("time.time", None, (), {})
    assert redis_client.hget(f"rq:job:{job_id}", "result_ttl") == b"0"
    assert rq_backend.remove_wake_jobs(redis_client, {job_id: "orders"}) == 1
    assert redis_client.lrange("rq:queue:orders", 0, -1) == [b"user-job"]
    assert not redis_client.exists(f"rq:job:{job_id}")


def test_in_flight_ignores_wake_jobs_and_counts_registries(redis_client):
    later = time.time() + 300  # RQ's deadline for the job's heartbeat
    redis_client.zadd("rq:wip:orders", {"queueops-wake-" + "0" * 32: later, "real": later})
    redis_client.zadd("rq:failed:orders", {"f1": 1, "f2": 2})
    redis_client.rpush("rq:queue:orders", "w1")
    assert [e.job_id for e in rq_backend.in_flight(redis_client, ["orders"])] == ["real"]
    counts = rq_backend.queue_counts(redis_client, "orders")
    assert (counts["depth"], counts["started"], counts["failed"], counts["scheduled"]) == (1, 2, 2, 0)


def _looks(*answers):
    """A find that answers each look with the next set of (queue, job id), and counts the looks."""
    answers = list(answers)

    def find():
        find.looks += 1
        return set(answers.pop(0))

    find.looks = 0
    return find


def test_still_after_keeps_only_what_every_look_found_and_waits_the_whole_settle_only_for_it(monkeypatch):
    waits = []
    monkeypatch.setattr(rq_backend.time, "sleep", waits.append)
    # Jobs in transit under a live worker are gone at the second look: no wait for the rest of the settle.
    in_transit = _looks({("orders", "a")}, {("orders", "b")})
    assert rq_backend._still_after((in_transit,), 1.0) == [[]]
    assert (in_transit.looks, waits) == (2, [rq_backend.STUCK_FIRST_LOOK])

    # A job still there at the second look is watched to the end of the settle, and kept only if still there.
    waits.clear()
    stuck = _looks({("orders", "a"), ("orders", "b")}, {("orders", "b"), ("orders", "c")}, {("orders", "b")})
    gone_late = _looks({("orders", "x")}, {("orders", "x")}, set())
    assert rq_backend._still_after((stuck, gone_late), 1.0) == [[("orders", "b")], []]
    assert waits == [rq_backend.STUCK_FIRST_LOOK, 1.0 - rq_backend.STUCK_FIRST_LOOK]
    assert (stuck.looks, gone_late.looks) == (3, 3)

    # Nothing found at first: no wait at all, and a find that found nothing is not asked again.
    waits.clear()
    empty, other = _looks(set()), _looks({("orders", "y")}, set())
    assert rq_backend._still_after((empty, other), 1.0) == [[], []]
    assert (empty.looks, other.looks, len(waits)) == (1, 2, 1)
