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
import traceback
from typing import Any

try:
    from celery import Celery

    CELERY_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through missing_required_lib
    Celery = None
    CELERY_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import broker_url

UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
DEFAULT_REPLY_TIMEOUT = 1.0


def make_app(params: dict[str, Any]):
    """A bare Celery app on the broker described by the shared Redis options (no user code)."""
    url, transport_options = broker_url(params)
    app = Celery("queueops", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport_options,
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


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


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
    records = {_text(k): json.loads(_text(v)) for k, v in raw.items()}
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
            message, exchange, routing_key = json.loads(_text(raw))
        except (ValueError, TypeError):
            continue
        queue = _text(routing_key) or _text(exchange)
        if queue not in queues:
            continue
        headers = (message or {}).get("headers") or {}
        tasks.append(
            {
                "id": headers.get("id") or _text(tag),
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
    for key in client.scan_iter(match=f"{queue}*", count=1000, _type="list"):
        name = _text(key)
        if name == queue or (name.startswith(f"{queue}\x06\x16") and name[len(queue) + 2 :].isdigit()):
            total += int(client.llen(key))
    return total


# --- replay and health gate (task_requeue, rollout_check) ---
