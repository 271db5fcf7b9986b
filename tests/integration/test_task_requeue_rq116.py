"""task_requeue on the RQ 1.16 key layout: jobs written and run by RQ 1.16 itself are replayed once."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.identity import worker_name
from tests.support.paths import SAMPLE_APP
from tests.support.runner import run_module
from tests.support.waiting import wait_until
from tests.support.workers import start_rq_worker

pytestmark = pytest.mark.slow

ENQUEUE = """
import json, sys
from redis import Redis
from rq import Queue
queue = Queue(sys.argv[2], connection=Redis.from_url(sys.argv[1]))
kwargs = json.loads(sys.argv[3])
print(json.dumps({queue.enqueue("sampleapp.tasks.work", t, **kwargs).id: t for t in sys.argv[4:]}))
"""


def _enqueue(venv, url, ledger, tokens, **kwargs) -> dict[str, str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", ENQUEUE, url, "orders", json.dumps(kwargs), *tokens],
        check=True,
        capture_output=True,
        text=True,
        cwd=SAMPLE_APP,
    )
    ledger.note_enqueued(*tokens)
    return json.loads(out.stdout)


def test_rq116_failed_and_abandoned_jobs_are_replayed_once(rq116, redis_server, redis_client, ledger, workers):
    bad = start_rq_worker(redis_server.url, ["orders"], worker_name("shop", "2.0.0", 0), venv=rq116, fail_every=3)
    workers.append(bad)
    token_of = _enqueue(rq116, redis_server.url, ledger, [f"old-{i}" for i in range(15)])
    assert wait_until(lambda: len(ledger.done_counts()) + len(ledger.failed_counts()) == 15)
    slow = _enqueue(rq116, redis_server.url, ledger, ["old-slow"], seconds=3)
    assert wait_until(lambda: any(s["token"] == "old-slow" for s in ledger.starts()))
    assert redis_client.zrange("rq:wip:orders", 0, -1) == [next(iter(slow)).encode()]  # 1.x: plain job ids
    bad.kill()
    expected = {job_id for job_id, token in token_of.items() if token in ledger.failed_counts()}
    assert expected

    base = {"backend": "rq", "queues": ["orders"], "redis_url": redis_server.url}
    failed = run_module("task_requeue", dict(base, failed_by="shop:2.0.0:*"))
    assert not failed.failed, failed.msg
    assert set(failed["ids"]) == expected
    time.sleep(1.2)
    abandoned = run_module("task_requeue", dict(base, source="abandoned", heartbeat_timeout=1))
    assert abandoned["ids"] == list(slow), abandoned["sources"]

    workers.append(start_rq_worker(redis_server.url, ["orders"], worker_name("shop", "1.0.0", 0), venv=rq116))
    assert wait_until(lambda: not ledger.lost()), f"lost: {ledger.lost()}"
    assert ledger.duplicated() == {}
    assert [s["worker"] for s in ledger.starts() if s["token"] == "old-slow"] == [
        worker_name("shop", "2.0.0", 0),
        worker_name("shop", "1.0.0", 0),
    ]
    assert run_module("task_requeue", dict(base, failed_by="2.0.0"))["replayed"] == 0
