"""Where the tasks of a release queue ran: the ledger of the tokens ``<prefix>-...`` of one task type.

    python -m tests.support.routed_tasks --redis-url redis://10.0.0.2:6379/0 --prefix totals

Prints one JSON object: ``enqueued``, ``finished``, ``lost`` (enqueued, never finished),
``duplicated`` (finished more than once), ``failed`` (failures raised), ``runs_by_release``
(release -> task starts, a failed run and its replay each count) and ``queues`` (the queues the
starts came from). Versioned routing holds when no release older than the one that introduced the
task type ever started one, and nothing was lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import redis

from .ledger import DONE, ENQUEUED, FAILED, STARTS


def measure(client: redis.Redis, prefix: str) -> dict:
    enqueued = {t for t in client.smembers(ENQUEUED) if t.startswith(f"{prefix}-")}
    done = {t: int(n) for t, n in client.hgetall(DONE).items() if t in enqueued}
    failed = {t: int(n) for t, n in client.hgetall(FAILED).items() if t in enqueued}
    starts = [entry for entry in map(json.loads, client.lrange(STARTS, 0, -1)) if entry["token"] in enqueued]
    return {
        "enqueued": len(enqueued),
        "finished": sum(1 for t in enqueued if done.get(t)),
        "lost": sum(1 for t in enqueued if not done.get(t)),
        "duplicated": sum(1 for n in done.values() if n > 1),
        "failed": sum(failed.values()),
        "runs_by_release": dict(sorted(Counter(entry["release"] for entry in starts).items())),
        "queues": sorted({entry["queue"] for entry in starts}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    print(json.dumps(measure(client, args.prefix), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
