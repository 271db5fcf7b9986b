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

from .loadgen import COUNT_KEY, ENQUEUED

MARKS = "queueops:fleet:marks"
DONE, FAILED = "queueops:ledger:done", "queueops:ledger:failed"


def snapshot(client: redis.Redis) -> dict[str, int]:
    enqueued, done, failed = client.smembers(ENQUEUED), client.hkeys(DONE), client.hkeys(FAILED)
    return {
        "enqueued": len(enqueued),
        "finished": len(enqueued & set(done)),
        "failed": len(failed),
        "failed_then_finished": len(set(failed) & set(done)),
        "loaded": int(client.get(COUNT_KEY) or 0),  # the load generator's last token number
    }


def load_number(token: str) -> int | None:
    """n of the main load generator's token ``load-<n>-<hex>``; None for any other token."""
    parts = token.split("-")
    return int(parts[1]) if len(parts) == 3 and parts[0] == "load" and parts[1].isdigit() else None


def case_numbers(before: dict, after: dict) -> range:
    """The load generator's token numbers of the case between two marks."""
    return range(before.get("loaded", 0) + 1, after.get("loaded", 0) + 1)


def rows(marks: list[dict], done: dict[str, int] | None = None) -> list[dict]:
    """One row per case: the difference between its mark and the one before.

    With ``done`` (token -> times finished, read at the end), each row also says what became of the
    tasks the load generator enqueued during the case (``load-<n>-...``, n counting from 1: a case owns
    the n between the load generator's counts at its two marks): ``lost`` (never finished) and ``duplicated``
    (finished more than once).
    """
    by_number: dict[int, int] = {}
    for token, times in (done or {}).items():
        number = load_number(token)
        if number is not None:
            by_number[number] = times
    table = []
    for before, after in zip(marks, marks[1:]):
        row = {"case": after["case"], "seconds": round(after["t"] - before["t"], 1)}
        row.update({key: after[key] - before[key] for key in ("enqueued", "failed", "failed_then_finished")})
        if done is not None:
            numbers = case_numbers(before, after)
            row["lost"] = sum(1 for n in numbers if by_number.get(n, 0) == 0)
            row["duplicated"] = sum(1 for n in numbers if by_number.get(n, 0) > 1)
        table.append(row)
    return table


def table(cases: list[dict]) -> str:
    """The rows of ``rows`` as a text table, one line per case."""
    lines = [f"{'case':<72} {'s':>6} {'enqueued':>8} {'lost':>4} {'dup':>4} {'failed':>6} {'replayed':>8}"]
    for row in cases:
        lines.append(
            f"{row['case'][:72]:<72} {row['seconds']:>6} {row['enqueued']:>8} {row.get('lost', '-'):>4}"
            f" {row.get('duplicated', '-'):>4} {row['failed']:>6} {row['failed_then_finished']:>8}"
        )
    return "\n".join(lines)


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
