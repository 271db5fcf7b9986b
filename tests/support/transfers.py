"""The transactional task's books: what the ledger says of the ``transfer`` tasks beside what
PostgreSQL holds (the sample app's store.py). The faults fleets use it:

    python -m tests.support.transfers init --dsn postgresql://sampleapp:...@10.0.0.9/sampleapp
    python -m tests.support.transfers visible --dsn ... --token fault1-rq
    0
    python -m tests.support.transfers audit --dsn ... --redis-url redis://10.0.0.2:6379/0 --prefix transfer
    {"enqueued": 412, "finished": 412, "lost": 0, "run_twice": 61, "applied": 412, "applied_twice": 0, ...}
    python -m tests.support.transfers watch --dsn ... --redis-url ... --prefix transfer --out watch.json

``init`` creates the tables (waiting up to ``--timeout`` s for the server); ``visible`` prints how
many rows of one task id another session sees (its marker and its journal rows); ``audit`` counts,
for the tokens ``<prefix>-...``, ``enqueued``, ``finished``, ``lost`` and
``run_twice`` (started more than once: a redelivery, a replay) from the ledger, and ``applied``,
``applied_twice``, ``partial`` and ``claimed_empty`` from the database, and
``finished_not_applied`` / ``applied_not_finished`` (the two sets must be equal). ``watch`` reads
the database as another session does, every ``--every`` s, while the tasks run, until the key
``queueops:transfers:watch:stop`` exists, and writes ``{"polls", "partial_max", "applied_twice_max",
"errors", "last_error", "stopped"}`` to ``--out`` after every read: a partial write any of its reads
saw counts, not only one left at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import redis

from .ledger import DONE, ENQUEUED, STARTS
from .paths import SAMPLE_APP

sys.path.insert(0, str(SAMPLE_APP))
from sampleapp import store  # the app's own schema and audit, from source

WATCH_STOP = "queueops:transfers:watch:stop"


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
        return conn.execute(
            "SELECT (SELECT count(*) FROM sampleapp_applied WHERE task_id = %(t)s)"
            " + (SELECT count(*) FROM sampleapp_journal WHERE task_id = %(t)s)",
            {"t": token},
        ).fetchone()[0]


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


def _stopped(client: redis.Redis) -> bool:
    """Whether the stop key is there; while Redis is away (restarted, loading, failing over), not yet."""
    try:
        return bool(client.exists(WATCH_STOP))
    except redis.RedisError:
        return False


def _write(out: str, seen: dict) -> None:
    partial = f"{out}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(seen, handle, sort_keys=True)
    os.replace(partial, out)


def watch(dsn: str, client: redis.Redis, prefix: str, out: str, every: float) -> int:
    """Read the books until told to stop. What it saw is written after every read (``stopped`` once it
    was told), so a watcher that died or hung still says how far it got; a read PostgreSQL refused is
    counted in ``errors`` and the next one reconnects."""
    import psycopg

    client.delete(WATCH_STOP)
    seen = {"polls": 0, "partial_max": 0, "applied_twice_max": 0, "errors": 0, "last_error": "", "stopped": False}
    conn = None
    while not _stopped(client):
        try:
            conn = conn if conn is not None and not conn.closed else store.connect(dsn)
            books = store.audit(conn, f"{prefix}-")
        except psycopg.Error as exc:
            seen["errors"] += 1
            seen["last_error"] = repr(exc)[:300]
            conn = None
        else:
            seen["polls"] += 1
            seen["partial_max"] = max(seen["partial_max"], books["partial"] + books["claimed_empty"])
            seen["applied_twice_max"] = max(seen["applied_twice_max"], books["applied_twice"])
        _write(out, seen)
        time.sleep(every)
    seen["stopped"] = True
    _write(out, seen)
    if conn is not None:
        conn.close()
    print(json.dumps(seen, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init_parser = commands.add_parser("init", help="create the tables, once the server answers")
    init_parser.add_argument("--timeout", type=float, default=60.0)
    visible_parser = commands.add_parser("visible", help="rows of one task id another session sees")
    visible_parser.add_argument("--token", required=True)
    audit_parser = commands.add_parser("audit", help="the ledger beside the database, as JSON")
    watch_parser = commands.add_parser("watch", help="read the database while the tasks run, until told to stop")
    watch_parser.add_argument("--out", required=True)
    watch_parser.add_argument("--every", type=float, default=0.5)
    for sub in (audit_parser, watch_parser):
        sub.add_argument("--redis-url", required=True)
        sub.add_argument("--prefix", required=True)
    for sub in (init_parser, visible_parser, audit_parser, watch_parser):
        sub.add_argument("--dsn", required=True)
    args = parser.parse_args(argv)
    if args.command == "init":
        return init(args.dsn, args.timeout)
    if args.command == "visible":
        print(visible(args.dsn, args.token))
        return 0
    # A read that outlives a restart of Redis gives up after 5 s (the watcher's loop goes on).
    client = redis.Redis.from_url(args.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2)
    if args.command == "watch":
        return watch(args.dsn, client, args.prefix, args.out, args.every)
    print(json.dumps(audit(args.dsn, client, args.prefix), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
