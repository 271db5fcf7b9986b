"""Pause latency and drain-detection lag of queue_pause's RQ backend, against RQ's own suspend.

Run: .venv/bin/python benchmarks/bench_pause.py [rounds]

Both sides use the same real redis-server and the same `rq worker` (started with --worker-ttl 20,
so its blocking dequeue times out after 5 s instead of the default 405 s). Pause latency = from the
call until the idle, blocked worker reports state "suspended" (it cannot take a job any more).
Baseline = `rq suspend` alone (SET rq:suspended), measured in the same run: whether the blocked
worker suspends at all after its dequeue timeout, and whether it starts a job enqueued after.
Drain-detection lag = from the end
of a running job (its ledger start + its duration) until the drain loop reports nothing in flight.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible_collections.queueops.rollback.plugins.module_utils import rq_backend  # noqa: E402
from tests.support.ledger import Ledger  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402
from tests.support.workers import start_rq_worker  # noqa: E402

WORKER = "bench:1:1"


def _blocked(client):
    return any(c["cmd"] in ("blpop", "blmove") for c in client.client_list())


def _state(client):
    return (client.hget(f"rq:worker:{WORKER}", "state") or b"").decode()


def _resume_and_wait_blocked(client):
    rq_backend.resume(client)
    assert wait_until(lambda: _state(client) == "idle" and _blocked(client), timeout=10), "worker did not resume"
    time.sleep(0.05)


def pause_latency(client, wake: bool) -> float:
    _resume_and_wait_blocked(client)
    start = time.monotonic()
    rq_backend.suspend(client)
    if wake:
        rq_backend.settle_suspension(client, ["bench"], poll=0.002)
    assert wait_until(lambda: _state(client) == "suspended", timeout=30)
    return time.monotonic() - start


def baseline_suspend_alone(client, ledger, wait: float = 6.0) -> tuple[bool, int]:
    """`rq suspend` alone: did the blocked worker suspend within `wait` (> dequeue timeout), and how many
    jobs enqueued after the suspend did it start anyway?"""
    from rq import Queue

    _resume_and_wait_blocked(client)
    rq_backend.suspend(client)
    t_pause = time.time()
    suspended = wait_until(lambda: _state(client) == "suspended", timeout=wait, every=0.05)
    Queue("bench", connection=client).enqueue("sampleapp.tasks.work", f"after-suspend-{t_pause}")
    time.sleep(0.5)
    return suspended, len(ledger.starts_between(t_pause, time.time()))


def drain_lag(client, ledger, seconds=0.5) -> float:
    from rq import Queue

    _resume_and_wait_blocked(client)
    before = len(ledger.starts())
    Queue("bench", connection=client).enqueue("sampleapp.tasks.work", f"drain-{time.time()}", seconds)
    assert wait_until(lambda: len(ledger.starts()) > before)
    started = ledger.starts()[-1]["t"]
    rq_backend.suspend(client)
    rq_backend.settle_suspension(client, ["bench"])
    while rq_backend.in_flight(client, ["bench"]):
        time.sleep(0.05)  # the module's poll interval
    return time.time() - (started + seconds)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    server = RedisServer().start()
    client = server.client()
    worker = start_rq_worker(server.url, ["bench"], WORKER, extra_args=["--worker-ttl", "20"])
    try:
        assert wait_until(lambda: _blocked(client), timeout=10)
        ours = [pause_latency(client, wake=True) for _ in range(rounds)]
        base = [baseline_suspend_alone(client, Ledger(client)) for _ in range(2)]
        lags = [drain_lag(client, Ledger(client)) for _ in range(rounds)]
    finally:
        worker.kill()
        server.stop()
    ours_ms = statistics.median(ours) * 1000
    print(
        f"pause latency, queue_pause (suspend + wake-up), median of {len(ours)}: {ours_ms:8.1f} ms "
        f"(max {max(ours) * 1000:.1f})"
    )
    for i, (suspended, started) in enumerate(base, 1):
        print(
            f"baseline round {i}, rq suspend alone: worker suspended within 6 s (dequeue timeout 5 s): {suspended}; "
            f"jobs started after the suspend: {started}"
        )
    print("  (RQ re-enters BLPOP/BLMOVE after a dequeue timeout without reading rq:suspended: an idle worker")
    print("   only sees the flag after it has run one more job, so the baseline latency is unbounded)")
    print(f"drain-detection lag (poll 50 ms), median of {len(lags)}: {statistics.median(lags) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
