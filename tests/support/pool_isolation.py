"""What another pool's rollout did to a pool with its own Redis database: its ledger, before and during.

    python -m tests.support.pool_isolation --redis-url redis://10.0.0.2:6379/1 --prefix mail \
        --before 1733270000.0 --start 1733270010.0 --end 1733270060.0

Reads the ledger of the pool's database (its sample app records there) and prints one JSON object:
``enqueued``, ``finished``, ``lost`` (enqueued, never finished) and ``duplicated`` (finished more than
once) of the tokens ``<prefix>-...``; ``max_gap_before_s`` and ``max_gap_during_s``, the longest time
without a task start in [before, start) and in [start, end] (a pause of the pool, or its workers
stopped, shows as a gap of seconds); ``per_second_before`` and ``per_second_during``, the task starts
per second in each; ``paused`` (RQ's ``rq:suspended`` or a Celery pause record in that database now).
"""

from __future__ import annotations

import argparse
import json
import sys

import redis

STARTS, DONE = "queueops:ledger:starts", "queueops:ledger:done"
ENQUEUED = "queueops:ledger:enqueued"


def gaps(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest gap between task starts in [start, end] (its edges count), and starts per second."""
    inside = sorted(t for t in times if start <= t <= end)
    points = [start, *inside, end]
    longest = max(b - a for a, b in zip(points, points[1:]))
    return round(longest, 3), round(len(inside) / (end - start), 2) if end > start else 0.0


def measure(client: redis.Redis, prefix: str, before: float, start: float, end: float) -> dict:
    enqueued = {t for t in client.smembers(ENQUEUED) if t.startswith(f"{prefix}-")}
    done = {t: int(n) for t, n in client.hgetall(DONE).items() if t.startswith(f"{prefix}-")}
    times = [entry["t"] for entry in map(json.loads, client.lrange(STARTS, 0, -1)) if entry["token"] in enqueued]
    gap_before, rate_before = gaps(times, before, start)
    gap_during, rate_during = gaps(times, start, end)
    return {
        "enqueued": len(enqueued),
        "finished": sum(1 for t in enqueued if done.get(t)),
        "lost": sum(1 for t in enqueued if not done.get(t)),
        "duplicated": sum(1 for t in enqueued if done.get(t, 0) > 1),
        "max_gap_before_s": gap_before,
        "max_gap_during_s": gap_during,
        "per_second_before": rate_before,
        "per_second_during": rate_during,
        "paused": bool(client.exists("rq:suspended") or client.hlen("queueops:celery:paused")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--before", type=float, required=True)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--end", type=float, required=True)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    print(json.dumps(measure(client, args.prefix, args.before, args.start, args.end), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
