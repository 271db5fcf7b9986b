"""The transactional task's books: what the ledger says of the ``transfer`` tasks beside what
PostgreSQL holds (the sample app's store.py). The faults fleets use it:

    python -m tests.support.transfers init --dsn postgresql://sampleapp:...@10.0.0.9/sampleapp
    python -m tests.support.transfers visible --dsn ... --token fault1-rq
    0
    python -m tests.support.transfers audit --dsn ... --redis-url redis://10.0.0.2:6379/0 --prefix transfer
    {"enqueued": 412, "finished": 412, "lost": 0, "run_twice": 61, "applied": 412, "applied_twice": 0, ...}

``init`` creates the tables (waiting up to ``--timeout`` s for the server); ``visible`` prints how
many rows of one task id another session sees (its marker and its journal rows); ``audit`` counts,
for the tokens ``<prefix>-...``, ``enqueued``, ``finished``, ``lost`` and
``run_twice`` (started more than once: a redelivery, a replay) from the ledger, and ``applied``,
``applied_twice``, ``partial`` and ``claimed_empty`` from the database, and
``finished_not_applied`` / ``applied_not_finished`` (the two sets must be equal).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import redis

from .ledger import DONE, ENQUEUED, STARTS
from .paths import SAMPLE_APP

sys.path.insert(0, str(SAMPLE_APP))
from sampleapp import store  # the app's own schema and audit, from source


def init(dsn: str, timeout: float) -> int:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            store.create_schema(dsn)
            return 0
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                print(
                    f"PostgreSQL at {dsn.rpartition('@')[2]} did not answer within {timeout:g} s: {exc}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)


def visible(dsn: str, token: str) -> int:
    with store.connect(dsn) as conn:
        return store.visible(conn, token)


def audit(dsn: str, client: redis.Redis, prefix: str) -> dict:
    chosen = {t for t in client.smembers(ENQUEUED) if t.startswith(f"{prefix}-")}
    done = {t: int(n) for t, n in client.hgetall(DONE).items() if t in chosen}
    starts = Counter(
        token for token in (json.loads(raw)["token"] for raw in client.lrange(STARTS, 0, -1)) if token in chosen
    )
    with store.connect(dsn) as conn:
        books = store.audit(conn, f"{prefix}-")
    applied_ids = set(books.pop("applied_ids"))
    finished = {t for t in chosen if done.get(t)}
    return {
        "enqueued": len(chosen),
        "finished": len(finished),
        "lost": len(chosen - finished),
        "run_twice": sum(1 for n in starts.values() if n > 1),
        **books,
        "finished_not_applied": sorted(finished - applied_ids)[:10],
        "applied_not_finished": sorted(applied_ids - finished)[:10],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init_parser = commands.add_parser("init", help="create the tables, once the server answers")
    init_parser.add_argument("--timeout", type=float, default=60.0)
    visible_parser = commands.add_parser("visible", help="rows of one task id another session sees")
    visible_parser.add_argument("--token", required=True)
    audit_parser = commands.add_parser("audit", help="the ledger beside the database, as JSON")
    audit_parser.add_argument("--redis-url", required=True)
    audit_parser.add_argument("--prefix", required=True)
    for sub in (init_parser, visible_parser, audit_parser):
        sub.add_argument("--dsn", required=True)
    args = parser.parse_args(argv)
    if args.command == "init":
        return init(args.dsn, args.timeout)
    if args.command == "visible":
        print(visible(args.dsn, args.token))
        return 0
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    print(json.dumps(audit(args.dsn, client, args.prefix), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
