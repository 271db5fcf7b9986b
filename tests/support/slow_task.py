"""Enqueue one slow sample task and print, as JSON, where it runs once a worker started it.

The Molecule fleets use it to kill a worker in the middle of a task (case 5):

    python -m tests.support.slow_task start --backend rq --redis-url redis://10.0.0.2:6379/0 \
        --queue orders --token kill-rq-1 --seconds 6
    {"token": "kill-rq-1", "host": "qo-rq-w2", "pid": 812, "ppid": 790, "worker": "shop:1.0.0:...", ...}
    python -m tests.support.slow_task runs --redis-url redis://10.0.0.2:6379/0 --token kill-rq-1
    1

``runs`` waits until the task finished once (at most ``--timeout``) and prints how often it did.
``--task transfer`` sends the transactional task (the sample app's store.py), whose seconds pass
inside its transaction: a kill then leaves nothing written. The token is the job's (task's) id.

The token goes into the ledger's enqueued set first, like every load generator token, so the
verifier counts it: it must finish exactly as often as the framework's delivery allows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis

from .loadgen import ENQUEUED

STARTS = "queueops:ledger:starts"
DONE = "queueops:ledger:done"


def enqueue(backend: str, url: str, queue: str, token: str, seconds: float, task: str = "work") -> None:
    if backend == "rq":
        from rq import Queue

        Queue(queue, connection=redis.Redis.from_url(url)).enqueue(
            f"sampleapp.tasks.{task}", token, seconds, job_id=token, result_ttl=3600, failure_ttl=86400, job_timeout=600
        )
        return
    from celery import Celery

    app = Celery("slow_task", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task(f"sampleapp.{task}", args=[token, seconds], queue=queue, task_id=token)


def started(client: redis.Redis, token: str, after: int) -> dict | None:
    for raw in client.lrange(STARTS, after, -1):
        entry = json.loads(raw)
        if entry.get("token") == token:
            return entry
    return None


def start(args: argparse.Namespace, client: redis.Redis) -> int:
    before = client.llen(STARTS)
    client.sadd(ENQUEUED, args.token)
    enqueue(args.backend, args.redis_url, args.queue, args.token, args.seconds, args.task)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        entry = started(client, args.token, before)
        if entry is not None:
            print(json.dumps(entry))
            return 0
        time.sleep(0.1)
    print(f"no worker started {args.token} within {args.timeout:g} s", file=sys.stderr)
    return 1


def runs(args: argparse.Namespace, client: redis.Redis) -> int:
    deadline = time.monotonic() + args.timeout
    while not client.hexists(DONE, args.token) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(int(client.hget(DONE, args.token) or 0))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="enqueue the task and wait until a worker starts it")
    start_parser.add_argument("--backend", choices=["rq", "celery"], required=True)
    start_parser.add_argument("--queue", required=True)
    start_parser.add_argument("--seconds", type=float, default=6.0)
    start_parser.add_argument(
        "--task", choices=["work", "transfer"], default="work", help="transfer: the seconds are inside its transaction"
    )
    runs_parser = commands.add_parser("runs", help="wait until it finished, print how many times it did")
    for sub in (start_parser, runs_parser):
        sub.add_argument("--redis-url", required=True)
        sub.add_argument("--token", required=True)
        sub.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url, decode_responses=True)
    return (start if args.command == "start" else runs)(args, client)


if __name__ == "__main__":
    sys.exit(main())
