# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything the collection knows about Celery 5.x on a Redis broker, without the user's app.

The modules build a bare Celery app from the shared Redis options (``broker_url(params)``) and
talk to the workers over the pidbox (``celery.control``): broadcasts carry a reply timeout and,
when the expected workers are known, a ``limit`` so a full set of replies returns at once.

Kombu Redis transport keys (kombu 5.x):

- ``<queue>``                 list of messages waiting (JSON envelopes), one per queue name
- ``unacked``                 hash ``delivery_tag`` -> JSON ``[message, exchange, routing_key]``
                              for every message a worker holds (running, reserved, prefetched)
- ``unacked_index``           zset ``delivery_tag`` -> time delivered
- ``_kombu.binding.<exchange>`` set of bindings ``routing_key\\x06\\x16pattern\\x06\\x16queue``
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from typing import Any

try:
    from celery import Celery

    CELERY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through missing_required_lib
    Celery = None
    CELERY_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.queueops.rollback.plugins.module_utils.identity import as_text
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import celery_settings
from ansible_collections.queueops.rollback.plugins.module_utils.replay import (
    Selection,
    SourceReport,
    parse_time,
)

UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
DEFAULT_REPLY_TIMEOUT = 1.0


def make_app(params: dict[str, Any]):
    """A bare Celery app on the broker described by the shared Redis options (no user code).

    A module's ``broker_url`` option, when set, names a broker other than the Redis the shared
    options point at (where the results are).
    """
    if params.get("broker_url"):
        params = dict(params, redis_url=params["broker_url"], sentinel_hosts=None)
    app = Celery("queueops", set_as_current=False)
    app.conf.update(
        **celery_settings(params),
        broker_connection_retry=False,
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        worker_hijack_root_logger=False,
    )
    return app


def close_app(app) -> None:
    with contextlib.suppress(Exception):  # closing is best effort
        app.close()


def node_host(node: str) -> str | None:
    """The host part of a Celery node name ``name@host`` (None when there is none)."""
    return node.split("@", 1)[1] if "@" in node else None


# --- pause, resume and in-flight (queue_pause, queue_info) ---
#
# cancel_consumer / add_consumer change a running worker's consumers in memory only: a restarted
# worker consumes its ``-Q`` queues again. So which workers a pause took a queue from is kept in
# Redis (PAUSED_KEY), and resume gives the queue back to exactly those workers.

PAUSED_KEY = "queueops:celery:paused"  # hash queue -> JSON list of node names that consumed it


class CeleryControlError(Exception):
    """A broadcast did not get the answers it needed; the message is fit for a user."""


def _inspect(app, method: str, destination: list[str] | None, timeout: float) -> dict[str, Any]:
    inspector = app.control.inspect(
        destination=destination, timeout=timeout, limit=len(destination) if destination else None
    )
    return getattr(inspector, method)() or {}


def consumers(app, destination: list[str] | None = None, timeout: float = DEFAULT_REPLY_TIMEOUT) -> dict[str, list]:
    """``inspect active_queues``: node -> names of the queues it consumes (only nodes that answered)."""
    replies = _inspect(app, "active_queues", destination, timeout)
    return {node: sorted(q.get("name") for q in queues or []) for node, queues in replies.items()}


def _broadcast(app, command: str, queue: str, nodes: list[str], timeout: float) -> dict[str, Any]:
    if not nodes:
        return {}
    replies = app.control.broadcast(
        command, arguments={"queue": queue}, destination=nodes, reply=True, timeout=timeout, limit=len(nodes)
    )
    merged: dict[str, Any] = {}
    for reply in replies or []:
        merged.update(reply)
    return merged


def cancel_consumer(app, queue: str, nodes: list[str], timeout: float = DEFAULT_REPLY_TIMEOUT) -> dict[str, Any]:
    """Tell ``nodes`` to stop consuming ``queue``; node -> reply for the nodes that answered."""
    return _broadcast(app, "cancel_consumer", queue, nodes, timeout)


def add_consumer(app, queue: str, nodes: list[str], timeout: float = DEFAULT_REPLY_TIMEOUT) -> dict[str, Any]:
    """Tell ``nodes`` to consume ``queue`` again; node -> reply for the nodes that answered."""
    return _broadcast(app, "add_consumer", queue, nodes, timeout)


def paused_records(client, queues: list[str] | None = None) -> dict[str, list[str]]:
    """queue -> nodes a pause took it from (kept until resume)."""
    import json

    raw = client.hgetall(PAUSED_KEY)
    records = {as_text(k): json.loads(as_text(v)) for k, v in raw.items()}
    return {q: n for q, n in records.items() if queues is None or q in queues}


def record_paused(client, queue: str, nodes: list[str]) -> None:
    import json

    known = paused_records(client, [queue]).get(queue, [])
    client.hset(PAUSED_KEY, queue, json.dumps(sorted(set(known) | set(nodes))))


def forget_paused(client, queue: str) -> None:
    client.hdel(PAUSED_KEY, queue)


def _task_queue(delivery_info: dict[str, Any]) -> str:
    return delivery_info.get("routing_key") or delivery_info.get("exchange") or ""


def worker_tasks(app, queues: list[str], destination: list[str] | None, timeout: float) -> list[dict[str, Any]]:
    """``inspect active`` + ``reserved`` for ``queues``: one dict per task (id, name, queue, worker, state)."""
    tasks = []
    for method, state in (("active", "active"), ("reserved", "reserved")):
        for node, entries in _inspect(app, method, destination, timeout).items():
            for entry in entries or []:
                queue = _task_queue(entry.get("delivery_info") or {})
                if queue in queues:
                    tasks.append(
                        {
                            "id": entry.get("id"),
                            "name": entry.get("name"),
                            "queue": queue,
                            "worker": node,
                            "state": state,
                        }
                    )
    return tasks


def unacked_tasks(client, queues: list[str]) -> list[dict[str, Any]]:
    """Entries of the transport's ``unacked`` hash for ``queues`` (messages a worker holds)."""
    import json

    tasks = []
    for tag, raw in client.hgetall(UNACKED_KEY).items():
        try:
            message, exchange, routing_key = json.loads(as_text(raw))
        except (ValueError, TypeError):
            continue
        queue = as_text(routing_key) or as_text(exchange)
        if queue not in queues:
            continue
        headers = (message or {}).get("headers") or {}
        tasks.append(
            {
                "id": headers.get("id") or as_text(tag),
                "name": headers.get("task"),
                "queue": queue,
                "worker": None,
                "state": "unacked",
            }
        )
    return tasks


def in_flight(
    app, client, queues: list[str], destination: list[str] | None = None, timeout: float = DEFAULT_REPLY_TIMEOUT
) -> list[dict[str, Any]]:
    """Tasks in flight on ``queues``, one entry per task id: workers' view first, then the unacked hash."""
    by_id: dict[str, dict[str, Any]] = {}
    for task in worker_tasks(app, queues, destination, timeout) + unacked_tasks(client, queues):
        by_id.setdefault(task["id"], task)
    return sorted(by_id.values(), key=lambda t: (t["queue"], str(t["id"])))


def queue_depth(client, queue: str) -> int:
    """Messages waiting: kombu keeps one list per queue, plus one per priority step when priorities are on."""
    total = 0
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in queue)  # the name itself, not a glob
    for key in client.scan_iter(match=f"{pattern}*", count=1000, _type="list"):
        name = as_text(key)
        if name == queue or (name.startswith(f"{queue}\x06\x16") and name[len(queue) + 2 :].isdigit()):
            total += int(client.llen(key))
    return total


# --- replay and health gate (task_requeue, rollout_check) ---
#
# Replay re-publishes failed tasks from the result backend (needs result_extended); the health
# gate counts task-succeeded / task-failed events by hostname and pings the workers.


CELERY_META_PREFIX = "celery-task-meta-"
REPLAYED_MARKER = "queueops:replayed:"
REPLAYED_MARKER_TTL = 30 * 86400
_PRIORITY_SEPARATOR = "\x06\x16"

# Mark a task as replayed for this failure (its date_done); 0 when it already was.
_MARK_REPLAYED_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""


def _celery_failed_metas(client, report: SourceReport):
    """(task id, meta) of every FAILURE in the result backend; unreadable metas are counted, not raised."""
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=f"{CELERY_META_PREFIX}*", count=1000)
        if keys:
            for key, raw in zip(keys, client.mget(keys)):
                if raw is None:
                    continue
                try:
                    meta = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    report.candidates += 1
                    report.skip("result not JSON (only the JSON result serializer can be replayed)")
                    continue
                if not isinstance(meta, dict) or meta.get("status") != "FAILURE":
                    continue
                report.candidates += 1
                yield as_text(key)[len(CELERY_META_PREFIX) :], meta
        if cursor == 0:
            break


RESULT_EXTENDED_OFF = "no task name or arguments in the result (result_extended is off)"


def celery_requeue(
    client,
    app,
    *,
    queues: list[str],
    selection: Selection,
    to_queue: str | None = None,
    check_mode: bool = False,
) -> SourceReport:
    """Re-publish failed Celery tasks from the result backend with their own id, name, args and queue."""
    report = SourceReport("failed")
    chosen = []
    for task_id, meta in _celery_failed_metas(client, report):
        if not meta.get("name") or "args" not in meta:
            report.skip(RESULT_EXTENDED_OFF)
            continue
        queue = meta.get("queue") or ""
        if queues and queue not in queues:
            report.skip("on another queue")
            continue
        if not selection.accepts(
            worker=meta.get("worker"), ended_at=parse_time(meta.get("date_done")), task_name=meta["name"]
        ):
            report.skip("filtered out")
            continue
        if not (to_queue or queue):
            report.skip("no queue recorded")
            continue
        if as_text(client.get(REPLAYED_MARKER + task_id)) == str(meta.get("date_done")):
            report.skip("already replayed")
            continue
        chosen.append((task_id, meta))
    chosen.sort(key=lambda item: str(item[1].get("date_done")))
    if selection.limit is not None:
        report.skip("over the limit", max(0, len(chosen) - selection.limit))
        chosen = chosen[: selection.limit]
    report.selected = len(chosen)
    if check_mode:
        report.replayed = len(chosen)
        report.add_ids([task_id for task_id, _meta in chosen])
        return report
    mark = client.register_script(_MARK_REPLAYED_LUA)
    with app.producer_or_acquire() as producer:
        for task_id, meta in chosen:
            marker = REPLAYED_MARKER + task_id
            if not mark(keys=[marker], args=[str(meta.get("date_done")), REPLAYED_MARKER_TTL]):
                report.skip("already replayed")
                continue
            try:
                app.send_task(
                    meta["name"],
                    args=meta.get("args") or [],
                    kwargs=meta.get("kwargs") or {},
                    task_id=task_id,
                    queue=to_queue or meta["queue"],
                    serializer="json",
                    producer=producer,
                )
            except Exception:
                client.delete(marker)
                raise
            report.replayed += 1
            report.add_ids([task_id])
    return report


def celery_backlog(client, queues: list[str]) -> int:
    """Messages waiting in the kombu Redis lists of the queues (priority sub-lists included)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
        for priority in (3, 6, 9):
            pipe.llen(f"{queue}{_PRIORITY_SEPARATOR}{priority}")
    return sum(pipe.execute())


def celery_observe(app, worker_ok, window: float, ping_timeout: float = 1.0) -> dict:
    """Count ``task-succeeded`` / ``task-failed`` events by hostname for ``window`` s; then ping the workers.

    Only workers started with ``-E`` (or after ``enable_events``) send task events.
    """

    counts = {"task-succeeded": 0, "task-failed": 0}
    heartbeats: set[str] = set()
    deadline = time.monotonic() + window

    def on_event(event: dict) -> None:
        kind = event.get("type")
        hostname = event.get("hostname") or ""
        if kind in counts and worker_ok(hostname):
            counts[kind] += 1
        elif kind == "worker-heartbeat" and worker_ok(hostname):
            heartbeats.add(hostname)
        if time.monotonic() >= deadline:
            receiver.should_stop = True

    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": on_event})
        while time.monotonic() < deadline and not receiver.should_stop:
            try:
                receiver.capture(limit=None, timeout=max(0.1, deadline - time.monotonic()), wakeup=False)
            except TimeoutError:
                continue
    replies = app.control.ping(timeout=ping_timeout) or []
    live = sorted(name for reply in replies for name in reply if worker_ok(name))
    return {
        "successes": counts["task-succeeded"],
        "failures": counts["task-failed"],
        "live_workers": live,
        "heartbeats": sorted(heartbeats),
    }
