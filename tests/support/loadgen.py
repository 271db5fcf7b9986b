"""A bounded load generator: enqueues sample tasks at a steady rate until told to stop.

Every token goes into the ledger's enqueued set *before* it is enqueued, so the ledger counts
exactly what was asked of the fleet (tests/support/ledger.py reads it back). The token is the
job's (task's) id too, so a lost or duplicated one can be looked up in the broker.

    python -m tests.support.loadgen --backend rq --redis-url redis://10.0.0.2:6379/0 \
        --queues orders --rate 20 --max 20000 --prefix case1 \
        [--sentinels 10.0.0.5:26379,10.0.0.6:26379 --sentinel-service shop-redis]

It stops when ``--max`` tokens were enqueued, or when the key ``queueops:loadgen:stop`` exists,
and keeps the count it reached in ``queueops:loadgen:count`` (``queueops:loadgen:<name>:stop`` and
``...:count`` for a second one started with ``--name``). ``--task totals`` sends the task type
release 1.9.0 introduced (the sample app's routing.py) instead of ``work``; ``--task transfer``, the
transactional task (its store.py). While Redis is away (restarted, failed
over) it waits and sends again, as a producer with a retry policy does, for up to ``--outage`` s.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import uuid
from urllib.parse import urlsplit

import redis

ENQUEUED = "queueops:ledger:enqueued"
STOP_KEY = "queueops:loadgen:stop"
COUNT_KEY = "queueops:loadgen:count"


def keys(name: str = "") -> tuple[str, str]:
    """(stop key, count key) of the load generator called ``name`` (the main one: no name)."""
    return (f"queueops:loadgen:{name}:stop", f"queueops:loadgen:{name}:count") if name else (STOP_KEY, COUNT_KEY)


def connect(url: str, sentinels: list[str] | None = None, service: str | None = None) -> redis.Redis:
    """The producer's client: the URL's Redis, or the master the Sentinels name (asked again on each
    new connection, so a failover is followed)."""
    if not sentinels:
        return redis.Redis.from_url(url)
    from redis.sentinel import Sentinel

    addresses = [(host, int(port)) for host, _, port in (entry.rpartition(":") for entry in sentinels)]
    db = int(urlsplit(url).path.strip("/") or 0)  # the database is the URL's, as for a plain connection
    return Sentinel(addresses, socket_timeout=5).master_for(service, socket_timeout=5, db=db)


def _sender(backend: str, url: str, sentinels: list[str] | None = None, service: str | None = None, task: str = "work"):
    if backend == "rq":
        from rq import Queue

        connection = connect(url, sentinels, service)
        queues: dict[str, Queue] = {}

        def send(queue: str, token: str) -> None:
            if queue not in queues:
                queues[queue] = Queue(queue, connection=connection)
            queues[queue].enqueue(f"sampleapp.tasks.{task}", token, job_id=token, result_ttl=3600, failure_ttl=86400)

        return send
    from celery import Celery

    transport = {}
    if sentinels:  # kombu's Sentinel form: one sentinel:// URL per Sentinel, the master set's name as an option
        url = ";".join(f"sentinel://{entry}/{urlsplit(url).path.strip('/') or 0}" for entry in sentinels)
        transport = {"master_name": service}
    app = Celery("loadgen", broker=url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_transport_options=transport)

    def send(queue: str, token: str) -> None:
        app.send_task(f"sampleapp.{task}", args=[token], queue=queue, task_id=token)

    return send


def _retrying(outage: float):
    """Call again while Redis is away; a send whose reply was lost can be sent twice (counted as run twice)."""
    errors: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
    try:
        from kombu.exceptions import OperationalError

        errors = (*errors, OperationalError)
    except ImportError:  # the RQ side has no kombu
        pass

    def call(function, *args):
        deadline = time.monotonic() + outage
        while True:
            try:
                return function(*args)
            except errors as exc:
                if time.monotonic() > deadline:
                    raise
                print(f"{time.time():.1f} Redis is away ({exc}); again in 0.2 s", file=sys.stderr, flush=True)
                time.sleep(0.2)

    return call


def run(
    backend: str,
    url: str,
    queues: list[str],
    rate: float,
    maximum: int,
    prefix: str,
    outage: float = 60,
    sentinels: list[str] | None = None,
    service: str | None = None,
    task: str = "work",
    name: str = "",
) -> int:
    client = connect(url, sentinels, service)
    stop_key, count_key = keys(name)
    client.delete(stop_key)
    send, again = _sender(backend, url, sentinels, service, task), _retrying(outage)
    interval = 1.0 / rate
    started = time.monotonic()
    count = 0
    for count, queue in zip(range(1, maximum + 1), itertools.cycle(queues)):
        if again(client.exists, stop_key):
            count -= 1
            break
        token = f"{prefix}-{count}-{uuid.uuid4().hex[:8]}"
        again(client.sadd, ENQUEUED, token)
        again(send, queue, token)
        again(client.set, count_key, count)
        delay = started + count * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    again(client.set, count_key, count)
    return count


def wait(url: str, log: str | None, timeout: float = 20.0, name: str = "") -> int:
    """Until the count of a running load generator grows; else say why, with its log."""
    client = redis.Redis.from_url(url)
    deadline, first = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        count = int(client.get(keys(name)[1]) or 0)
        if first is None and count:
            first = count
        elif first is not None and count > first:
            print(f"the load generator enqueues ({count} so far)")
            return 0
        time.sleep(0.2)
    text = ""
    if log:
        try:
            with open(log, encoding="utf-8", errors="replace") as handle:
                text = handle.read()[-4000:]
        except OSError as exc:
            text = f"(its log {log} cannot be read: {exc})"
    print(f"the load generator did not enqueue within {timeout:g} s (count {first}); its log:\n{text}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["wait"]:
        waiter = argparse.ArgumentParser(prog="loadgen wait", description="wait until a load generator enqueues")
        waiter.add_argument("--redis-url", required=True)
        waiter.add_argument("--log")
        waiter.add_argument("--name", default="")
        options = waiter.parse_args(argv[1:])
        return wait(options.redis_url, options.log, name=options.name)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["rq", "celery"], required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queues", required=True, help="comma-separated")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks per second")
    parser.add_argument("--max", type=int, default=100_000, help="tasks in all, then stop")
    parser.add_argument("--prefix", default="load")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds to wait for Redis to come back")
    parser.add_argument("--sentinels", help="host:port,...: reach the master of --sentinel-service through these")
    parser.add_argument("--sentinel-service", help="the master set's name (the database is --redis-url's)")
    parser.add_argument("--task", choices=["work", "totals", "transfer"], default="work", help="the task type to send")
    parser.add_argument("--name", default="", help="a second load generator's own stop and count keys")
    args = parser.parse_args(argv)
    if bool(args.sentinels) != bool(args.sentinel_service):
        parser.error("--sentinels and --sentinel-service go together")
    sentinels = args.sentinels.split(",") if args.sentinels else None
    count = run(
        args.backend,
        args.redis_url,
        args.queues.split(","),
        args.rate,
        args.max,
        args.prefix,
        args.outage,
        sentinels,
        args.sentinel_service,
        args.task,
        args.name,
    )
    print(f"enqueued {count} task(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
