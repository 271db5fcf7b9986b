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
import socket
import time
import traceback
from collections.abc import Iterator
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.health import Observation
from ansible_collections.queueops.rollback.plugins.module_utils.identity import (
    as_text,
    parse_worker_name,
    worker_matches,
)
from ansible_collections.queueops.rollback.plugins.module_utils.pausing import (
    PauseError,
    PauseOutcome,
    states,
    unknown_queues_message,
)
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import celery_settings
from ansible_collections.queueops.rollback.plugins.module_utils.replay import (
    IDS_CAP,
    Selection,
    SourceReport,
    parse_time,
)
from ansible_collections.queueops.rollback.plugins.module_utils.routing import release_queue_facts

KOMBU_SEPARATOR = "\x06\x16"  # between the fields of a binding, and before a queue's priority step
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
DEFAULT_REPLY_TIMEOUT = 1.0


def celery_import_error() -> str | None:
    """The traceback of importing celery here, or None when it imports (every Celery call needs it)."""
    try:
        import celery  # noqa: F401  # pylint: disable=unused-import
    except ImportError:
        return traceback.format_exc()
    return None


def make_app(params: dict[str, Any]):
    """A bare Celery app on the broker described by the shared Redis options (no user code).

    A module's ``broker_url`` option, when set, names a broker other than the Redis the shared
    options point at (where the results are).
    """
    if params.get("broker_url"):
        params = dict(params, redis_url=params["broker_url"], sentinel_hosts=None)
    from celery import Celery  # here, not at the top: an RQ run never imports it (about 0.15 s a call)

    app = Celery("queueops", set_as_current=False)
    settings = celery_settings(params)
    # The bare app only broadcasts and inspects: it must never restore the unacked messages of a
    # killed worker (kombu does that when a channel starts consuming), which needs other rights.
    settings["broker_transport_options"] = {**settings["broker_transport_options"], "unacked_restore_limit": 0}
    app.conf.update(
        **settings,
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


@contextlib.contextmanager
def opened_app(params) -> Iterator[Any]:
    """``make_app(params)`` for the length of a ``with`` block, closed after it whatever happens."""
    app = make_app(params)
    try:
        yield app
    finally:
        close_app(app)


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


def _inspect(
    app, method: str, destination: list[str] | None, timeout: float, expect: int | None = None
) -> dict[str, Any]:
    """A remote-control inspect; the wait for replies ends at ``timeout``, or once every node of
    ``destination`` answered, or, with no destination, once ``expect`` nodes did."""
    limit = len(destination) if destination else (expect or None)
    inspector = app.control.inspect(destination=destination, timeout=timeout, limit=limit)
    return getattr(inspector, method)() or {}


def consumers(
    app, destination: list[str] | None = None, timeout: float = DEFAULT_REPLY_TIMEOUT, client=None
) -> dict[str, list]:
    """``inspect active_queues``: node -> names of the queues it consumes (only nodes that answered).

    Asked of every node (no ``destination``) with the broker's ``client``, the wait ends once as many
    nodes answered as have a remote-control mailbox (``registered_nodes``) instead of at the timeout:
    a live worker has one, as kombu binds it when the worker starts and again when it reconnects. A
    mailbox left by a killed worker never answers, and the wait is then the whole timeout, as without."""
    expect = len(registered_nodes(client)) if client is not None and not destination else None
    replies = _inspect(app, "active_queues", destination, timeout, expect)
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
    raw = client.hgetall(PAUSED_KEY)
    records = {as_text(k): json.loads(as_text(v)) for k, v in raw.items()}
    return {q: n for q, n in records.items() if queues is None or q in queues}


def write_paused(client, queue: str, nodes: list[str]) -> None:
    """Set the pause record of ``queue`` to ``nodes``; no nodes deletes it."""
    if nodes:
        client.hset(PAUSED_KEY, queue, json.dumps(sorted(set(nodes))))
    else:
        client.hdel(PAUSED_KEY, queue)


PIDBOX_BINDINGS_KEY = "_kombu.binding.celery.pidbox"
_PIDBOX_SUFFIX = ".celery.pidbox"
_BINDING_PREFIX = "_kombu.binding."


def registered_nodes(client) -> set[str]:
    """Nodes with a remote-control mailbox on the broker.

    A worker binds ``<node>.celery.pidbox`` to the ``celery.pidbox`` fanout exchange when it starts
    and unbinds it on a clean shutdown; a killed worker leaves its binding behind.
    """
    nodes = set()
    for member in client.smembers(PIDBOX_BINDINGS_KEY):
        queue = as_text(member).rsplit(KOMBU_SEPARATOR, 1)[-1]
        if queue.endswith(_PIDBOX_SUFFIX):
            nodes.add(queue[: -len(_PIDBOX_SUFFIX)])
    return nodes


def _slot(node: str) -> tuple[str, str, str | None] | None:
    """(pool, index, host) of one of our node names: the systemd unit ``<pool>@<index>`` on a host,
    which runs one worker process at a time."""
    identity = parse_worker_name(node)
    return (identity.pool, identity.index, node_host(node)) if identity else None


def gone_nodes(client, silent: set[str], live: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Of nodes that did not answer a broadcast, those that have stopped: no mailbox left, or (for
    our ``<pool>:<version>:<index>@<host>`` names) their unit on that host now answers as another
    release. A worker that stops while Redis is away (a failover, a restart) cannot take its
    mailbox back, so the mailbox alone does not prove it alive."""
    if not silent:
        return []
    registered = registered_nodes(client)
    replaced = {_slot(n) for n in live} - {None}
    return sorted(n for n in silent if n not in registered or _slot(n) in replaced)


def bound_queues(client) -> set[str]:
    """Every queue some exchange routes to: the last field of the members of kombu's binding sets
    (``_kombu.binding.<exchange>``), which a worker or a producer declaring a queue adds."""
    bound: set[str] = set()
    for key in client.scan_iter(match=f"{_BINDING_PREFIX}*", count=1000):
        for member in client.smembers(key):
            bound.add(as_text(member).rsplit(KOMBU_SEPARATOR, 1)[-1])
    return bound


def unknown_queues(client, queues: list[str], consumed: set[str]) -> list[str]:
    """Those of ``queues`` no live worker consumes, with no message waiting, no pause record and no
    binding on the broker: names the broker has never seen."""
    candidates = [q for q in queues if q not in consumed]
    if not candidates:
        return []
    records = paused_records(client, candidates)
    bound = bound_queues(client)
    depths = queue_depths(client, candidates)
    return [q for q in candidates if q not in records and q not in bound and not depths[q]]


def pause_queues(
    app,
    client,
    queues: list[str],
    *,
    workers: list[str] | None = None,
    reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
    settle_timeout: float = 10.0,
    allow_missing: bool = False,
    allow_unknown: bool = False,
    check_mode: bool = False,
) -> PauseOutcome:
    """``cancel_consumer`` of ``queues`` on the workers (``workers``, or every one that answers),
    verified with ``inspect active_queues``; remembers which workers it took each queue from."""
    return _ConsumerChange(app, client, queues, workers, reply_timeout, resume=False).run(
        settle_timeout=settle_timeout, allow_missing=allow_missing, allow_unknown=allow_unknown, check_mode=check_mode
    )


def resume_queues(
    app,
    client,
    queues: list[str],
    *,
    workers: list[str] | None = None,
    reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
    allow_missing: bool = False,
    allow_unknown: bool = False,
    check_mode: bool = False,
) -> PauseOutcome:
    """``add_consumer`` of ``queues`` on the workers a pause took them from (``workers`` of those, if
    given). A recorded worker that has stopped (no answer, no mailbox) is forgotten, not waited for:
    a restarted worker consumes its ``-Q`` queues again under its new node name."""
    return _ConsumerChange(app, client, queues, workers, reply_timeout, resume=True).run(
        settle_timeout=0, allow_missing=allow_missing, allow_unknown=allow_unknown, check_mode=check_mode
    )


class _ConsumerChange:
    """One pause or resume: read who consumes what, plan the broadcasts, send them, verify."""

    def __init__(self, app, client, queues: list[str], wanted: list[str] | None, timeout: float, *, resume: bool):
        self.app, self.client, self.queues, self.wanted, self.timeout = app, client, queues, wanted, timeout
        self.resume = resume
        self.answered = consumers(app, wanted, timeout, client)  # the nodes this change acts on
        live = consumers(app, None, timeout, client) if wanted else self.answered
        self.others = {n: c for n, c in live.items() if n not in self.answered}  # live, not ours to change
        self.records = paused_records(client, queues)
        recorded = {n for nodes in self.records.values() for n in nodes}
        self.gone = gone_nodes(client, recorded - set(live), set(live))
        self.missing = sorted(set(wanted or []) - set(self.answered))

    def _targets(self, queue: str) -> list[str]:
        if not self.resume:
            return [n for n, consumed in self.answered.items() if queue in consumed]
        recorded = [n for n in self.records.get(queue, []) if n not in self.gone]
        return [n for n in recorded if not self.wanted or n in self.wanted]

    def _kept_record(self, queue: str, took: list[str]) -> list[str]:
        """The pause record of ``queue`` after the change (gone nodes dropped)."""
        recorded = [n for n in self.records.get(queue, []) if n not in self.gone]
        if not self.resume:
            return sorted(set(recorded) | set(took))
        return [n for n in recorded if n in self.missing or (self.wanted and n not in self.wanted)]

    def run(self, *, settle_timeout: float, allow_missing: bool, allow_unknown: bool, check_mode: bool):
        consumed = {q for c in [*self.answered.values(), *self.others.values()] for q in c}
        unknown = [] if allow_unknown else unknown_queues(self.client, self.queues, consumed)
        if unknown:
            raise PauseError(unknown_queues_message(unknown, "the Celery broker"))
        targets = {q: self._targets(q) for q in self.queues}
        if self.resume:
            silent = {n for nodes in targets.values() for n in nodes if n not in self.answered}
            self.missing = sorted(set(self.missing) | silent)
        if self.missing and not allow_missing:
            raise PauseError(
                f"Celery workers {', '.join(self.missing)} did not answer within {self.timeout:g} s; nothing "
                "changed (set allow_missing_workers to act on the others)",
                missing_workers=self.missing,
                forgotten_workers=self.gone,
            )
        plan = {
            q: [n for n in nodes if n in self.answered and (q in self.answered[n]) != self.resume]
            for q, nodes in targets.items()
        }
        new_records = {q: self._kept_record(q, plan[q]) for q in self.queues}
        changed = any(plan.values()) or any(new_records[q] != self.records.get(q, []) for q in self.queues)
        details: dict[str, Any] = {}
        warnings: list[str] = []
        if changed and not check_mode:
            after = self._apply(plan, new_records)
            if not self.resume:
                details["prefetched_pending"], warnings = self._settle(settle_timeout)
        else:
            after = {
                n: sorted(set(c) | {q for q, ns in plan.items() if n in ns})
                if self.resume
                else sorted(set(c) - {q for q, ns in plan.items() if n in ns})
                for n, c in self.answered.items()
            }
        if self.missing and not allow_missing:  # a node that answered the inspect but not the broadcast
            raise PauseError(
                f"Celery workers {', '.join(self.missing)} did not answer the broadcast",
                changed=changed,
                workers=after,
                missing_workers=self.missing,
                forgotten_workers=self.gone,
            )
        return PauseOutcome(
            changed=changed,
            before=self._states(self.answered),
            after=self._states(after),
            details={"workers": after, "missing_workers": self.missing, "forgotten_workers": self.gone, **details},
            warnings=warnings,
        )

    def _states(self, ours: dict[str, list[str]]) -> dict[str, str]:
        seen = [*ours.values(), *self.others.values()]
        return states(self.queues, lambda q: not any(q in consumed for consumed in seen))

    def _apply(self, plan: dict[str, list[str]], new_records: dict[str, list[str]]) -> dict[str, list[str]]:
        command = add_consumer if self.resume else cancel_consumer
        for queue, nodes in plan.items():
            if not self.resume and nodes:
                # Recorded before the broadcast: a pause whose record cannot be written never starts,
                # and one whose broadcast fails is taken back, so a refusal changes nothing.
                write_paused(self.client, queue, self._kept_record(queue, nodes))
                try:
                    replies = command(self.app, queue, nodes, self.timeout)
                except Exception:
                    with contextlib.suppress(Exception):
                        write_paused(self.client, queue, self.records.get(queue, []))
                    raise
            else:
                replies = command(self.app, queue, nodes, self.timeout)
            silent = [n for n in nodes if n not in replies]
            self.missing = sorted(set(self.missing) | set(silent))
            if not self.resume:
                new_records[queue] = self._kept_record(queue, [n for n in nodes if n in replies])
            elif silent:
                new_records[queue] = sorted(set(new_records[queue]) | set(silent))
            if new_records[queue] != self.records.get(queue, []):
                write_paused(self.client, queue, new_records[queue])
        return self._verified(plan)

    def _verified(self, plan: dict[str, list[str]]) -> dict[str, list[str]]:
        """``inspect active_queues`` until the workers that acknowledged agree with the change.

        A worker replies to cancel_consumer / add_consumer before it applies them (the control
        handler schedules the change with ``call_soon``), so one look right after can be early.
        """
        acknowledged = {n for nodes in plan.values() for n in nodes if n not in self.missing}
        deadline = time.monotonic() + max(2.0, 3 * self.timeout)
        while True:
            after = consumers(self.app, sorted(self.answered), self.timeout)
            wrong = sorted(
                {
                    n
                    for n, consumed in after.items()
                    for q in self.queues
                    if n in plan[q] and n in acknowledged and (q in consumed) != self.resume
                }
            )
            if not wrong:
                return after
            if time.monotonic() >= deadline:
                raise PauseError(
                    f"after the broadcast, inspect active_queues still disagrees on {', '.join(wrong)}",
                    changed=True,
                    workers=after,
                )
            time.sleep(0.05)

    def _settle(self, limit: float) -> tuple[list[dict[str, Any]], list[str]]:
        """Tasks a worker prefetched before the cancel still start: wait up to ``limit`` for them.

        Those still waiting in a worker's buffer then are returned: Celery cannot take them back.
        """
        nodes = sorted(self.answered)
        deadline = time.monotonic() + limit
        pending: list[dict[str, Any]] = []
        while nodes:
            tasks = worker_tasks(self.app, self.queues, nodes, self.timeout)
            pending = [t for t in tasks if t["state"] == "reserved"]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not pending:
            return [], []
        waiting = ", ".join(f"{t['id']} on {t['worker']}" for t in pending)
        return pending, [
            f"{len(pending)} task(s) of {', '.join(self.queues)} that workers prefetched before the pause had not "
            f"started after {limit:g} s and will start once their worker has a free slot: {waiting}. Use "
            "state=drained to wait for them, or worker_prefetch_multiplier=1 with task_acks_late to keep "
            "workers from prefetching"
        ]


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


def queue_depths(client, queues: list[str]) -> dict[str, int]:
    """Messages waiting per queue: kombu keeps one list per queue, plus ``<queue>\\x06\\x16<n>`` for
    each priority step n in 1..9 when priorities are on (one pipelined LLEN each, no key scan)."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
            for priority in range(1, 10):
                pipe.llen(f"{queue}{KOMBU_SEPARATOR}{priority}")
        lengths = pipe.execute()
    step = 10
    return {queue: sum(int(n) for n in lengths[i * step : (i + 1) * step]) for i, queue in enumerate(queues)}


def queue_facts(app, client, queues: list[str], workers: list[str] | None, timeout: float) -> dict[str, Any]:
    """What queue_info reports for Celery: per queue depth, running / prefetched / unacked, consumers,
    whether it exists and is paused; the workers that answered; warnings for backlogs nobody consumes."""
    answered = consumers(app, workers, timeout, client)
    nodes = sorted(answered)
    tasks = in_flight(app, client, queues, nodes, timeout) if nodes else unacked_tasks(client, queues)
    stats = (app.control.inspect(destination=nodes, timeout=timeout, limit=len(nodes)).stats() or {}) if nodes else {}
    records = paused_records(client, queues)
    depths = queue_depths(client, queues)
    consumed = {q for c in answered.values() for q in c}
    unknown = set(unknown_queues(client, queues, consumed))
    facts = {}
    for queue in queues:
        mine = [t for t in tasks if t["queue"] == queue]
        count = {state: sum(1 for t in mine if t["state"] == state) for state in ("active", "reserved", "unacked")}
        facts[queue] = {
            "exists": queue not in unknown,
            "depth": depths[queue],
            "in_flight": len(mine),
            "running": count["active"],
            "prefetched": count["reserved"],
            "unacked": count["unacked"],
            "consumers": sum(1 for c in answered.values() if queue in c),
            "failed": None,
            "scheduled": None,
            "deferred": None,
            "paused": queue not in consumed,
            "paused_from": records.get(queue, []),
        }
    releases, parked_warnings = release_queue_facts(
        queues,
        bound_queues(client),
        lambda names: queue_depths(client, names),
        lambda name: sum(1 for c in answered.values() if name in c),
    )
    for queue, found in releases.items():
        facts[queue]["releases"] = found
        facts[queue]["parked"] = sum(f["parked"] for f in found.values())
    listed = [
        _worker_entry(node, queues_of_node, queues, (stats.get(node) or {}).get("pid"))
        for node, queues_of_node in sorted(answered.items())
        if workers is not None or set(queues_of_node) & set(queues) or any(node in r for r in records.values())
    ]
    return {"queues": facts, "workers": listed, "warnings": backlog_warnings(facts) + parked_warnings}


def _worker_entry(node: str, queues_of_node: list[str], queues: list[str], pid: int | None = None) -> dict[str, Any]:
    identity = parse_worker_name(node)
    return {
        "name": node,
        "host": node_host(node),
        "pid": pid,
        "state": "consuming" if set(queues_of_node) & set(queues) else "paused",
        "queues": queues_of_node,
        "pool": identity.pool if identity else None,
        "release": identity.version if identity else None,
    }


def mailboxes_of(client, pool: str, release: str) -> int:
    """How many nodes of ``release`` of ``pool`` have a remote-control mailbox (``registered_nodes``): a
    worker binds it once it is ready to consume. One SMEMBERS, where asking the workers is a broadcast."""
    return sum(1 for node in registered_nodes(client) if worker_matches(node, pool=pool, version=release))


def consuming_workers(app, client, queues: list[str], timeout: float = DEFAULT_REPLY_TIMEOUT) -> list[dict[str, Any]]:
    """The workers that answer consuming one of ``queues``, as queue_info lists them (without pid; one
    ``inspect active_queues``, see ``consumers``). readiness.wait_for_release reads these."""
    return [
        _worker_entry(node, queues_of_node, queues)
        for node, queues_of_node in sorted(consumers(app, None, timeout, client).items())
        if set(queues_of_node) & set(queues)
    ]


def backlog_warnings(facts: dict[str, dict[str, Any]]) -> list[str]:
    """One warning per queue with tasks waiting and no live consumer (not paused on purpose)."""
    return [
        f"queue {queue} has {f['depth']} task(s) waiting and no live worker consumes it"
        for queue, f in facts.items()
        if f["depth"] and not f["consumers"] and not f.get("paused_from")
    ]


# --- replay and health gate (task_requeue, rollout_check) ---
#
# Replay re-publishes failed tasks from the result backend (needs result_extended); the health
# gate counts task-succeeded / task-failed events by hostname and pings the workers.


CELERY_META_PREFIX = "celery-task-meta-"
REPLAYED_MARKER = "queueops:replayed:"
REPLAYED_MARKER_TTL = 30 * 86400

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


def replay(
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


# --- moving what waits on one queue to another (task_requeue source=queue) ---
#
# A parked release queue (``<queue>@<version>``, see routing.py) is moved message by message from
# its tail (the oldest; kombu pushes on the left and workers pop on the right), each one rerouted
# to the target queue's binding so a later redelivery (a worker killed with it) lands there too.
# The script moves a message only while it is still the tail: a worker that took it meanwhile wins.

_MOVE_TAIL_LUA = """
local moved = 0
for i = 1, #ARGV, 2 do
  if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[i] then break end
  redis.call('RPOP', KEYS[1])
  redis.call('LPUSH', KEYS[2], ARGV[i + 1])
  moved = moved + 1
end
return moved
"""
MOVE_BATCH = 1000


def _route_to(client, queue: str) -> tuple[str, str]:
    """(exchange, routing key) that deliver to ``queue``: an existing binding, else the one Celery
    declares for a queue it creates by name (a direct exchange and a routing key both named after
    it), added as a producer's declare would."""
    for key in client.scan_iter(match=f"{_BINDING_PREFIX}*", count=1000):
        for member in client.smembers(key):
            routing_key, _pattern, bound = as_text(member).split(KOMBU_SEPARATOR, 2)
            if bound == queue:
                return as_text(key)[len(_BINDING_PREFIX) :], routing_key
    client.sadd(f"{_BINDING_PREFIX}{queue}", KOMBU_SEPARATOR.join((queue, "", queue)))
    return queue, queue


def _rerouted(raw: bytes, exchange: str, routing_key: str) -> tuple[str | bytes, str | None]:
    """The message envelope with its delivery info pointing at the new queue, and its task id."""
    try:
        message = json.loads(raw)
        properties = message.setdefault("properties", {})
        properties["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    except (ValueError, AttributeError, TypeError):
        return raw, None  # not a kombu envelope: moved as it is
    task_id = (message.get("headers") or {}).get("id") or properties.get("correlation_id")
    return json.dumps(message), as_text(task_id) if task_id else None


def move_queue(
    client, from_queue: str, to_queue: str, *, limit: int | None = None, check_mode: bool = False
) -> SourceReport:
    """Move what waits on ``from_queue`` (priority sub-lists included) to ``to_queue``, oldest first."""
    report = SourceReport("queue")
    suffixes = ["", *(f"{KOMBU_SEPARATOR}{n}" for n in range(1, 10))]
    total = backlog(client, [from_queue])
    report.candidates = report.selected = total if limit is None else min(total, limit)
    left = report.selected
    if check_mode:
        for suffix in suffixes:
            if left <= 0:
                break
            batch = client.lrange(from_queue + suffix, -min(left, IDS_CAP), -1)[::-1]
            report.add_ids([i for i in (_rerouted(raw, to_queue, to_queue)[1] for raw in batch) if i])
            left -= client.llen(from_queue + suffix)
        report.replayed = report.selected
        return report
    exchange, routing_key = _route_to(client, to_queue)
    move = client.register_script(_MOVE_TAIL_LUA)
    for suffix in suffixes:
        source, target = from_queue + suffix, to_queue + suffix
        while left > 0:
            batch = client.lrange(source, -min(left, MOVE_BATCH), -1)[::-1]  # oldest first
            if not batch:
                break
            rerouted = [_rerouted(raw, exchange, routing_key) for raw in batch]
            moved = move(
                keys=[source, target], args=[x for raw, (new, _id) in zip(batch, rerouted) for x in (raw, new)]
            )
            report.replayed += moved
            report.add_ids([task_id for _new, task_id in rerouted[:moved] if task_id])
            left -= moved
    return report


def backlog(client, queues: list[str]) -> int:
    """Messages waiting in the kombu Redis lists of the queues (priority sub-lists included)."""
    return sum(queue_depths(client, queues).values())


def _capture(app, worker_ok, window: float, ping_timeout: float = 1.0) -> dict:
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
            except (socket.timeout, TimeoutError):  # kombu raises socket.timeout: not a TimeoutError before 3.10
                continue
    replies = app.control.ping(timeout=ping_timeout) or []
    live = sorted(name for reply in replies for name in reply if worker_ok(name))
    return {
        "successes": counts["task-succeeded"],
        "failures": counts["task-failed"],
        "live_workers": live,
        "heartbeats": sorted(heartbeats),
    }


def observe(app, client, queues: list[str], worker_ok, window: float, ping_timeout: float = 1.0) -> Observation:
    """The health gate's view of Celery over ``window`` seconds: task-succeeded / task-failed events of
    ``worker_ok``'s workers, those that answer a ping, and the backlog before and after."""
    backlog_before = backlog(client, queues)
    seen = _capture(app, worker_ok, window, ping_timeout)
    return Observation(
        window=window,
        successes=seen["successes"],
        failures=seen["failures"],
        live_workers=len(seen["live_workers"]),
        backlog_before=backlog_before,
        backlog_after=backlog(client, queues),
        workers=seen["live_workers"],
    )


def halt_workers(app, names: list[str]) -> list[str]:
    """Tell each node of ``names`` to stop at once (Celery's ``shutdown`` remote control, sent to
    those nodes only): a warm shutdown, the tasks they run finish, no new one starts. No reply is
    awaited: the broadcast is the effect."""
    if not names:
        return []
    app.control.shutdown(destination=list(names))
    return list(names)
