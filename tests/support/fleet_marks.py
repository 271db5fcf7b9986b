"""Marks between the cases of a Molecule fleet: when each case ended and what the ledger held then.

    python -m tests.support.fleet_marks --redis-url redis://10.0.0.2:6379/0 --case "2: 1.2.0 fails its gate"

The fleet verifier (molecule/shared/tests/test_fleet.py) turns consecutive marks into one row per
case: seconds, tasks enqueued during it, tasks the bad release failed and how many of them finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis

from .loadgen import ENQUEUED

MARKS = "queueops:fleet:marks"
DONE, FAILED = "queueops:ledger:done", "queueops:ledger:failed"


def snapshot(client: redis.Redis) -> dict[str, int]:
    enqueued, done, failed = client.smembers(ENQUEUED), client.hkeys(DONE), client.hkeys(FAILED)
    return {
        "enqueued": len(enqueued),
        "finished": len(enqueued & set(done)),
        "failed": len(failed),
        "failed_then_finished": len(set(failed) & set(done)),
    }


def rows(marks: list[dict]) -> list[dict]:
    """One row per case: the difference between its mark and the one before."""
    table = []
    for before, after in zip(marks, marks[1:]):
        row = {"case": after["case"], "seconds": round(after["t"] - before["t"], 1)}
        row.update({key: after[key] - before[key] for key in ("enqueued", "failed", "failed_then_finished")})
        table.append(row)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--case", required=True)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    client.rpush(MARKS, json.dumps({"case": args.case, "t": time.time(), **snapshot(client)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
