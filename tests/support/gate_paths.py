"""Which tasks took a feature gate's new path, and when, from the ledger and the events stream.

    python -m tests.support.gate_paths --redis-url redis://10.0.0.2:6379/0 --pool shop --gate new_totals

Prints one JSON object: ``new_path`` (starts that took the gate's new path), ``opened_at`` and
``closed_at`` (the last opening of the gate, its ``since``, taken before it was written, and the
closing after it, from ``queueops:events``), ``verdict_at`` (the health gate's verdict that closed it,
when one did), ``before_open`` (new-path tasks that had read their gate before the opening) and
``after_close`` (new-path tasks that started after the closing): both 0, or the gate did not work;
``last_new_path_s`` (the last new-path start, in seconds after the verdict, or after the closing when
no verdict closed it) and ``gates_left`` (the gates of the pool still stored). A task's start time is
taken before it reads the gate, and its ``gt`` once it has: each bound is exact, with no race.
"""

from __future__ import annotations

import argparse
import json
import sys

import redis

STARTS = "queueops:ledger:starts"
EVENTS = "queueops:events"


def measure(client: redis.Redis, pool: str, gate: str) -> dict:
    events = [fields for _id, fields in client.xrange(EVENTS)]
    opened = [e for e in events if e.get("action") == "gate opened" and e.get("pool") == pool and e.get("gate") == gate]
    # The time taken before the gate was written (the event's own time comes after the write).
    opened_at = float(opened[-1]["since"]) if opened else None
    closing = [
        e
        for e in events
        if e.get("action") == "gate closed"
        and e.get("pool") == pool
        and e.get("gate") == gate
        and opened_at is not None
        and float(e["time"]) >= opened_at
    ]
    closing_event = closing[0] if closing else None
    closed_at = float(closing_event["time"]) if closing_event else None
    verdicts = [
        float(e["time"])
        for e in events
        if closing_event is not None
        and closing_event.get("module") == "rollout_check"
        and e.get("module") == "rollout_check"
        and e.get("action") in ("unhealthy", "inconclusive")
        and e.get("pool") == pool
        and opened_at <= float(e["time"]) <= closed_at
    ]
    verdict_at = verdicts[-1] if verdicts else None
    starts = [json.loads(raw) for raw in client.lrange(STARTS, 0, -1)]
    new_path = [s for s in starts if gate in s.get("gates", [])]
    last = max((s["t"] for s in new_path), default=None)
    since = verdict_at if verdict_at is not None else closed_at
    return {
        "new_path": len(new_path),
        "opened_at": opened_at,
        "closed_at": closed_at,
        "verdict_at": verdict_at,
        # Compared with when the task had read its gates: it began a moment earlier, maybe before the opening.
        "before_open": sum(1 for s in new_path if opened_at is None or s["gt"] < opened_at),
        "after_close": sum(1 for s in new_path if closed_at is not None and s["t"] > closed_at),
        "last_new_path_s": None if last is None or since is None else round(last - since, 3),
        "gates_left": sorted(client.hkeys(f"queueops:gates:{pool}")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--gate", required=True)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    print(json.dumps(measure(client, args.pool, args.gate), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
