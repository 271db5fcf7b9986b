# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything the collection knows about RQ's Redis layout, for RQ 1.x (1.16) and 2.x.

Read with plain Redis commands (never by unpickling job data), so a module needs only redis-py.

Key layout (identical in 1.16 and 2.x unless noted):

- ``rq:queues``                      set of queue keys (``rq:queue:<name>``)
- ``rq:queue:<name>``                list of job ids waiting; workers BLPOP (several queues) or
                                     BLMOVE (2.x, one queue, Redis >= 6.2) from it
- ``rq:queue:<name>:intermediate``   2.x only: where BLMOVE parks a job id until the worker took it
- ``rq:wip:<name>``                  started registry (zset, score = expiry); members are
                                     ``<job_id>:<execution_id>`` in 2.x and ``<job_id>`` in 1.x
- ``rq:failed|finished|scheduled|deferred|canceled:<name>``  the other registries (zsets)
- ``rq:job:<id>``                    job hash (status, origin, worker_name, ...)
- ``rq:workers``                     set of worker keys ``rq:worker:<name>``;
  ``rq:workers:<queue>``             the same per queue
- ``rq:worker:<name>``               worker hash: queues, state, hostname, pid, birth,
                                     last_heartbeat, current_job, version, death (when dead)
- ``rq:suspended``                   when it exists, every worker of this Redis db stops taking
                                     jobs at its next check (global: RQ has no per-queue suspend)

Every worker names its main connection after itself (``CLIENT SETNAME <worker name>``), which is
how a worker blocked in its dequeue is found in ``CLIENT LIST``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ansible_collections.queueops.rollback.plugins.module_utils.health import Observation
from ansible_collections.queueops.rollback.plugins.module_utils.identity import as_text, parse_worker_name
from ansible_collections.queueops.rollback.plugins.module_utils.pausing import (
    PauseError,
    PauseOutcome,
    states,
    unknown_queues_message,
)
from ansible_collections.queueops.rollback.plugins.module_utils.replay import (
    IDS_CAP,
    Selection,
    SourceReport,
    batched,
    parse_time,
    task_name_from_description,
)
from ansible_collections.queueops.rollback.plugins.module_utils.routing import release_queue_facts

QUEUES_KEY = "rq:queues"
QUEUE_PREFIX = "rq:queue:"
WORKERS_KEY = "rq:workers"
WORKER_PREFIX = "rq:worker:"
JOB_PREFIX = "rq:job:"
SUSPENDED_KEY = "rq:suspended"
RQ_DEFAULT_HEARTBEAT_TIMEOUT = 90  # rq keeps a busy worker's key 60 s past its 30 s monitoring interval

REGISTRY_TEMPLATES = {
    "started": "rq:wip:{0}",
    "failed": "rq:failed:{0}",
    "finished": "rq:finished:{0}",
    "scheduled": "rq:scheduled:{0}",
    "deferred": "rq:deferred:{0}",
    "canceled": "rq:canceled:{0}",
}

#: Redis commands an idle RQ worker blocks in, as CLIENT LIST shows them.
BLOCKING_DEQUEUE_COMMANDS = frozenset({"blpop", "blmove", "brpoplpush"})

# RQ 2.x execution ids are uuid4().hex; RQ 2.x job ids may not contain ':'.
_EXECUTION_ID = re.compile(r"[0-9a-f]{32}")


def queue_key(queue: str) -> str:
    return f"{QUEUE_PREFIX}{queue}"


def intermediate_queue_key(queue: str) -> str:
    return f"{QUEUE_PREFIX}{queue}:intermediate"


def registry_key(kind: str, queue: str) -> str:
    return REGISTRY_TEMPLATES[kind].format(queue)


def started_registry_key(queue: str) -> str:
    return registry_key("started", queue)


def execution_key(job_id: str, execution_id: str) -> str:
    """2.x: the hash of one run of a job (``worker_name``, ``created_at``), written with its started entry."""
    return f"rq:execution:{job_id}:{execution_id}"


def job_key(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def worker_key(name: str) -> str:
    return f"{WORKER_PREFIX}{name}"


def queue_workers_key(queue: str) -> str:
    return f"rq:workers:{queue}"


def parse_started_member(member: str | bytes) -> tuple[str, str | None]:
    """``(job_id, execution_id)`` of a started-registry member: 2.x ``<job>:<exec>``, 1.x ``<job>``."""
    text = as_text(member)
    job_id, sep, execution = text.rpartition(":")
    if sep and job_id and _EXECUTION_ID.fullmatch(execution):
        return job_id, execution
    return text, None


def parse_rq_time(value: str | bytes | None) -> datetime | None:
    """RQ's ``utcformat`` timestamps (``2024-01-02T03:04:05.123456Z``) as aware datetimes."""
    seconds = parse_time(value)
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)


@dataclass
class StartedEntry:
    """One job in a started registry: who runs it, since when (None when the job hash is gone)."""

    job_id: str
    execution_id: str | None
    queue: str
    worker: str | None = None
    started_at: str | None = None
    expires_at: float | None = None  # the registry score: RQ's deadline for the job's heartbeat
    abandoned: str | None = None  # why nothing will finish it (see ``abandoned_reason``), or None

    def as_dict(self) -> dict[str, Any]:
        entry = {
            "job_id": self.job_id,
            "execution_id": self.execution_id,
            "queue": self.queue,
            "worker": self.worker,
            "started_at": self.started_at,
        }
        if self.abandoned:
            entry["reason"] = self.abandoned
        return entry


def started_entries(client, queues: list[str]) -> list[StartedEntry]:
    """Jobs in the started registries of ``queues`` (both layouts), with their worker from the job hash."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrange(started_registry_key(queue), 0, -1, withscores=True)
        members_per_queue = pipe.execute()
    entries = [
        StartedEntry(*parse_started_member(member), queue=queue, expires_at=score)
        for queue, members in zip(queues, members_per_queue)
        for member, score in members
    ]
    if entries:
        runs = started_runs(client, [(entry.job_id, entry.execution_id) for entry in entries])
        for entry, (worker, started_at) in zip(entries, runs):
            entry.worker, entry.started_at = worker, started_at
    return entries


def started_runs(client, entries: list[tuple[str, str | None]]) -> list[tuple[str | None, str | None]]:
    """``(worker, started_at)`` of started entries ``(job_id, execution_id)``. RQ 2.x writes a run's
    execution hash (its worker, its start) with the started entry, in the worker, before it forks;
    only the work horse then writes the job's status, worker and start. Until then the job hash says
    what an earlier run left there: nothing for a new job, the worker of its failed run for a
    replayed one. So the execution names the run's worker; the job hash is read for 1.x entries and
    for an execution that expired. A job whose worker went away in between (killed, its Redis failed
    over) still says ``queued``, but its execution names the worker that took it."""
    job_ids = [job_id for job_id, _execution in entries]
    rows = _rq_job_fields(client, job_ids, ("worker_name", "started_at"))
    runs = [(as_text(worker) or None, as_text(started_at) or None) for worker, started_at in rows]
    with_execution = [i for i, (_job_id, execution) in enumerate(entries) if execution]
    if with_execution:
        with client.pipeline(transaction=False) as pipe:
            for i in with_execution:
                pipe.hmget(execution_key(*entries[i]), "worker_name", "created_at")
            for i, (worker, created_at) in zip(with_execution, pipe.execute()):
                worker, created_at = as_text(worker) or None, as_text(created_at) or None
                if worker is None:
                    continue  # expired with its run: the job hash is all there is
                job_worker, job_started = runs[i]
                runs[i] = (worker, job_started if job_worker == worker and job_started else rq_time_text(created_at))
    return runs


def rq_time_text(value: str | None) -> str | None:
    """An execution's ``created_at`` (epoch seconds) in RQ's ``utcformat``, as the job hash keeps times."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return value  # already a time text, or nothing
    return utcformat(datetime.fromtimestamp(seconds, timezone.utc))


@dataclass
class RQWorker:
    """A registered RQ worker as its hash describes it."""

    name: str
    queues: list[str]
    state: str
    hostname: str | None
    pid: int | None
    last_heartbeat: datetime | None
    birth: datetime | None
    current_job: str | None
    version: str | None
    dead: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:

        identity = parse_worker_name(self.name)
        return {
            "name": self.name,
            "host": self.hostname,
            "pid": self.pid,
            "state": self.state,
            "queues": self.queues,
            "pool": identity.pool if identity else None,
            "release": identity.version if identity else None,
            "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None,
            "birth": self.birth.isoformat() if self.birth else None,
            "current_job": self.current_job,
            "rq_version": self.version,
        }


def _worker_from_hash(name: str, data: dict) -> RQWorker:
    fields = {as_text(k): as_text(v) for k, v in data.items()}
    pid = fields.get("pid", "")
    return RQWorker(
        name=name,
        queues=[q for q in fields.get("queues", "").split(",") if q],
        state=fields.get("state", "") or "unknown",
        hostname=fields.get("hostname") or None,
        pid=int(pid) if pid.isdigit() else None,
        last_heartbeat=parse_rq_time(fields.get("last_heartbeat")),
        birth=parse_rq_time(fields.get("birth")),
        current_job=fields.get("current_job") or None,
        version=fields.get("version") or None,
        dead=bool(fields.get("death")),
        extra=fields,
    )


def list_workers(client, queues: list[str] | None = None) -> list[RQWorker]:
    """Registered, not dead workers (``rq:workers`` + their hashes); only those on ``queues`` if given."""
    keys = sorted(as_text(k) for k in client.smembers(WORKERS_KEY))
    if not keys:
        return []
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = pipe.execute()
    workers = []
    for key, data in zip(keys, hashes):
        if not data:  # expired hash still listed in the set: the worker died without unregistering
            continue
        worker = _worker_from_hash(key[len(WORKER_PREFIX) :], data)
        if worker.dead:
            continue
        if queues is not None and not set(worker.queues) & set(queues):
            continue
        workers.append(worker)
    return workers


def blocked_dequeue_clients(client) -> list[dict[str, Any]]:
    """Connections blocked in BLPOP/BLMOVE/BRPOPLPUSH, as CLIENT LIST entries (``name``, ``id``, ``cmd``)."""
    return [
        entry
        for entry in client.client_list()
        if as_text(entry.get("cmd")).lower() in BLOCKING_DEQUEUE_COMMANDS
        and "b" in as_text(entry.get("flags"))  # 'b' = blocked
    ]


# --- pause, wake-up and drain (queue_pause, queue_info) ---
#
# Why a wake-up job and not CLIENT UNBLOCK: an idle worker sits in
# ``dequeue_job_and_maintain_ttl``, a loop that only returns with a job. ``rq:suspended`` is read
# before that loop, never inside it. ``CLIENT UNBLOCK <id> TIMEOUT`` makes BLPOP/BLMOVE return
# nil: RQ raises DequeueTimeout, loops and blocks again, still blind to the flag. ``CLIENT UNBLOCK
# <id> ERROR`` raises ResponseError, which RQ treats as unhandled: the worker quits. (Measured with
# RQ 2.12 and 1.16.) So the pause hands every idle worker of the queues one no-op job pushed at the
# head of its queue: the worker runs it (``time.time``, result_ttl 0, nothing kept), goes back to
# the top of its loop, sees ``rq:suspended`` and stops there. No job of the user can start after.

WAKE_JOB_PREFIX = "queueops-wake-"
WAKE_JOB_FUNC = "time.time"


def is_wake_job(job_id: str) -> bool:
    return job_id.startswith(WAKE_JOB_PREFIX)


def utcformat(moment: datetime) -> str:
    """RQ's timestamp format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def suspension(client) -> dict[str, Any]:
    """Whether ``rq:suspended`` is set, and its remaining TTL in seconds (None: no expiry)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(SUSPENDED_KEY)
        pipe.ttl(SUSPENDED_KEY)
        exists, ttl = pipe.execute()
    return {"suspended": bool(exists), "ttl": ttl if exists and ttl is not None and ttl >= 0 else None}


def suspend(client, ttl: int | None = None) -> bool:
    """Set ``rq:suspended`` (with expiry ``ttl`` seconds); False if it was already set (left as it is)."""
    return bool(client.set(SUSPENDED_KEY, 1, ex=ttl or None, nx=True))


def resume(client) -> bool:
    """Delete ``rq:suspended``; True if it existed."""
    return bool(client.delete(SUSPENDED_KEY))


def push_wake_job(client, queue: str) -> str:
    """Put a no-op job (default pickle serializer) at the head of ``queue``; returns its id."""
    import pickle
    import uuid
    import zlib

    job_id = f"{WAKE_JOB_PREFIX}{uuid.uuid4().hex}"
    stamp = utcformat(datetime.now(timezone.utc))
    data = zlib.compress(pickle.dumps((WAKE_JOB_FUNC, None, (), {}), protocol=4))
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(
            job_key(job_id),
            mapping={
                "created_at": stamp,
                "enqueued_at": stamp,
                "data": data,
                "description": "queueops.rollback queue_pause wake-up (no-op)",
                "origin": queue,
                "timeout": 60,
                "result_ttl": 0,
                "failure_ttl": 60,
                "status": "queued",
            },
        )
        pipe.expire(job_key(job_id), 600)
        pipe.lpush(queue_key(queue), job_id)
        pipe.execute()
    return job_id


def remove_wake_jobs(client, placed: dict[str, str]) -> int:
    """Take back wake-up jobs no worker took (``placed`` = job id -> queue); returns how many."""
    if not placed:
        return 0
    with client.pipeline(transaction=True) as pipe:
        for job_id, queue in placed.items():
            pipe.lrem(queue_key(queue), 0, job_id)
        removed = pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        for job_id, queue in placed.items():
            pipe.lrem(intermediate_queue_key(queue), 0, job_id)
            pipe.delete(job_key(job_id))
            pipe.zrem(registry_key("finished", queue), job_id)
        pipe.execute()
    return sum(int(n) for n in removed)


def live_worker_names(client) -> set[str] | None:
    """Names of the connections RQ workers named after themselves; None if CLIENT LIST is refused."""
    import redis

    try:
        return {as_text(entry.get("name")) for entry in client.client_list() if entry.get("name")}
    except redis.ResponseError:
        return None


def _idle_live_workers(client, queues: list[str]) -> list[RQWorker]:
    # A worker killed while idle leaves a hash that says "idle" until its TTL (420 s): no connection
    # named after it means nobody waits in that dequeue. Only when CLIENT LIST is refused (None) is
    # the hash all there is to go by.
    names = live_worker_names(client)
    return [w for w in list_workers(client, queues) if w.state == "idle" and (names is None or w.name in names)]


def settle_suspension(client, queues: list[str], timeout: float = 10.0, poll: float = 0.02) -> dict[str, Any]:
    """After ``suspend``: wake every idle worker of ``queues`` until none waits in its dequeue.

    Returns ``woken`` (worker names handed a wake-up job), ``leftover_wake_jobs`` (taken back) and
    ``still_idle`` (workers still waiting at the timeout: the pause is not proven for them).
    """
    import time

    placed: dict[str, str] = {}
    woken: set[str] = set()
    last_push: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    still_idle: list[RQWorker] = []
    quiet_rounds = 0
    try:
        while True:
            still_idle = _idle_live_workers(client, queues)
            if not still_idle:
                quiet_rounds += 1
                if quiet_rounds >= 2:  # two looks in a row: no worker between a job and its suspension check
                    break
                time.sleep(poll)
                continue
            quiet_rounds = 0
            if time.monotonic() > deadline:
                break
            now_ = time.monotonic()
            for worker in still_idle:
                if now_ - last_push.get(worker.name, -1e9) < 0.5:
                    continue  # its wake-up job is on the way; give it time to be taken
                target = next((q for q in worker.queues if q in queues), worker.queues[0])
                placed[push_wake_job(client, target)] = target
                woken.add(worker.name)
                last_push[worker.name] = now_
            time.sleep(poll)
    finally:
        leftover = remove_wake_jobs(client, placed)
    return {
        "woken": sorted(woken),
        "wake_jobs": len(placed),
        "leftover_wake_jobs": leftover,
        "still_idle": sorted(w.name for w in still_idle),
    }


def live_workers(client, queues: list[str] | None = None) -> list[RQWorker]:
    """Registered workers (of ``queues`` if given) without those that are gone (see ``gone_workers``)."""
    workers = list_workers(client, queues)
    gone = gone_workers(client, {w.name for w in workers})
    return [w for w in workers if w.name not in gone]


def consuming_workers(client, queues: list[str] | None = None) -> list[dict[str, Any]]:
    """The live workers of ``queues`` as queue_info lists them (readiness.wait_for_release reads these)."""
    return [w.as_dict() for w in live_workers(client, queues)]


def unknown_queues(client, queues: list[str]) -> list[str]:
    """Those of ``queues`` RQ has never heard of: not in ``rq:queues``, no jobs, no registry, no worker."""
    known = set(known_queues(client)) | {q for w in list_workers(client) for q in w.queues}
    candidates = [q for q in queues if q not in known]
    if not candidates:
        return []
    with client.pipeline(transaction=False) as pipe:
        for queue in candidates:
            pipe.exists(queue_key(queue), *(registry_key(kind, queue) for kind in REGISTRY_TEMPLATES))
        found = pipe.execute()
    return [queue for queue, n in zip(candidates, found) if not n]


def _db_number(client) -> int:
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def _collateral(client, queues: list[str], live: list[RQWorker]) -> dict[str, list[str]]:
    """What ``rq:suspended`` stops beyond ``queues``: queues with a live worker or waiting jobs, and
    the live workers that consume none of ``queues``."""
    others = sorted((set(known_queues(client)) | {q for w in live for q in w.queues}) - set(queues))
    with client.pipeline(transaction=False) as pipe:
        for queue in others:
            pipe.llen(queue_key(queue))
        depths = pipe.execute() if others else []
    consumed = {q for w in live for q in w.queues}
    return {
        "queues": [q for q, depth in zip(others, depths) if depth or q in consumed],
        "workers": sorted(w.name for w in live if not set(w.queues) & set(queues)),
    }


def _collateral_warning(db: int, verb: str, collateral: dict[str, list[str]]) -> list[str]:
    if not (collateral["queues"] or collateral["workers"]):
        return []
    parts = []
    if collateral["queues"]:
        parts.append(f"queue(s) {', '.join(collateral['queues'])}")
    if collateral["workers"]:
        parts.append(f"worker(s) {', '.join(collateral['workers'])}")
    return [
        f"the RQ pause is global to Redis db {db}: this {verb} also applies to {' and '.join(parts)} "
        "(pools that must be paused apart need their own db)"
    ]


NO_WORKER_WHILE_SUSPENDED = (
    "rq:suspended is set and no RQ worker of Redis db {db} is running: `rq worker` refuses to start while it "
    "is set (it exits 1, 'RQ is currently suspended'). Resume before starting workers"
)


def _refuse_unknown(client, queues: list[str]) -> None:
    unknown = unknown_queues(client, queues)
    if unknown:
        raise PauseError(unknown_queues_message(unknown, f"Redis db {_db_number(client)}"))


def pause_queues(
    client,
    queues: list[str],
    *,
    ttl: int | None = None,
    settle_timeout: float = 10.0,
    allow_unknown: bool = False,
    check_mode: bool = False,
) -> PauseOutcome:
    """Suspend the db's RQ workers and prove it for ``queues``: no idle worker of theirs still waits in
    its dequeue (see ``settle_suspension``). Raises PauseError when the pause is not proven."""
    if not allow_unknown:
        _refuse_unknown(client, queues)
    before = suspension(client)
    changed = not before["suspended"]
    woken: list[str] = []
    if not check_mode:
        if changed:
            suspend(client, ttl)
        try:
            settled = settle_suspension(client, queues, timeout=settle_timeout)
        except Exception:
            if changed:  # a pause this run could not prove is taken back: nothing changed
                with contextlib.suppress(Exception):
                    resume(client)
            raise
        woken = settled["woken"]
        changed = changed or bool(woken)
        if settled["still_idle"]:
            raise PauseError(
                f"rq:suspended is set but workers {', '.join(settled['still_idle'])} still wait in their dequeue "
                f"after {settle_timeout:g} s: the pause is not proven for them",
                changed=changed,
                woken_workers=woken,
            )
    live = live_workers(client)
    collateral = _collateral(client, queues, live)
    db = _db_number(client)
    warnings = _collateral_warning(db, "pause", collateral)
    if not live:
        warnings.append(NO_WORKER_WHILE_SUSPENDED.format(db=db))
    now = suspension(client)
    ttl_left = (ttl if changed else before["ttl"]) if check_mode else now["ttl"]
    return PauseOutcome(
        changed=changed,
        before=states(queues, lambda _q: before["suspended"]),
        after=states(queues, lambda _q: True),
        details={"woken_workers": woken, "suspension_ttl": ttl_left, "also_paused": collateral},
        warnings=warnings,
    )


def resume_queues(client, queues: list[str], *, allow_unknown: bool = False, check_mode: bool = False) -> PauseOutcome:
    """Delete ``rq:suspended``: every RQ worker of the db takes jobs again."""
    if not allow_unknown:
        _refuse_unknown(client, queues)
    before = suspension(client)
    if before["suspended"] and not check_mode:
        resume(client)
    nothing: dict[str, list[str]] = {"queues": [], "workers": []}
    collateral = _collateral(client, queues, live_workers(client)) if before["suspended"] else nothing
    return PauseOutcome(
        changed=before["suspended"],
        before=states(queues, lambda _q: before["suspended"]),
        after=states(queues, lambda _q: False),
        details={"suspension_ttl": None, "also_resumed": collateral},
        warnings=_collateral_warning(_db_number(client), "resume", collateral),
    )


def gone_workers(client, names: set[str]) -> set[str]:
    """Those of ``names`` whose worker is gone (see ``worker_gone_reason``)."""
    if not names:
        return set()
    states, now = worker_states(client), time.time()
    return {name for name in names if worker_gone_reason(states.get(name), now) is not None}


def split_in_flight(
    client, queues: list[str], heartbeat_timeout: float = RQ_DEFAULT_HEARTBEAT_TIMEOUT
) -> tuple[list[StartedEntry], list[StartedEntry]]:
    """``(running, abandoned)`` in the started registries of ``queues``, without our wake-up jobs.

    Abandoned (``abandoned_reason``): nothing will finish those (task_requeue replays them), so a
    drain does not wait for them and queue_info lists them apart.
    """
    entries = [entry for entry in started_entries(client, queues) if not is_wake_job(entry.job_id)]
    states, now = worker_states(client), time.time()
    for entry in entries:
        entry.abandoned = abandoned_reason(
            entry.expires_at, entry.worker, states, parse_time(entry.started_at), now, heartbeat_timeout
        )
    return [e for e in entries if not e.abandoned], [e for e in entries if e.abandoned]


def in_flight(client, queues: list[str]) -> list[StartedEntry]:
    """What runs on ``queues`` now: their started registries, without our wake-up jobs and
    without the jobs of workers that are gone (see ``split_in_flight``)."""
    return split_in_flight(client, queues)[0]


def queue_counts(client, queue: str) -> dict[str, int]:
    """Depth and registry sizes of one queue (wake-up jobs not counted)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(queue_key(queue))
        for kind in ("started", "failed", "finished", "scheduled", "deferred", "canceled"):
            pipe.zcard(registry_key(kind, queue))
        depth, started, failed, finished, scheduled, deferred, canceled = pipe.execute()
    return {
        "depth": int(depth),
        "started": int(started),
        "failed": int(failed),
        "finished": int(finished),
        "scheduled": int(scheduled),
        "deferred": int(deferred),
        "canceled": int(canceled),
    }


def queue_facts(client, queues: list[str] | None) -> dict[str, Any]:
    """What queue_info reports for RQ: per queue depth, registries, in flight, consumers, whether it
    exists and is paused; the workers (``state: gone`` for those the liveness rule says are gone);
    abandoned jobs; warnings for a backlog nobody consumes and for a suspension no worker can start in."""
    queues = queues or known_queues(client)
    pause = suspension(client)
    states, now = worker_states(client), time.time()
    every_worker = list_workers(client)
    workers = [w for w in every_worker if set(w.queues) & set(queues)]
    gone = {w.name for w in every_worker if worker_gone_reason(states.get(w.name), now)}
    unknown = set(unknown_queues(client, queues))
    running, left = split_in_flight(client, queues)  # one look at the workers for every queue
    facts, abandoned = {}, {}
    for queue in queues:
        counts = queue_counts(client, queue)
        gone_jobs = [e.as_dict() for e in left if e.queue == queue]
        if gone_jobs:
            abandoned[queue] = gone_jobs
        facts[queue] = {
            "exists": queue not in unknown,
            "depth": counts["depth"],
            "in_flight": sum(1 for e in running if e.queue == queue),
            "consumers": sum(1 for w in workers if queue in w.queues and w.name not in gone),
            "failed": counts["failed"],
            "scheduled": counts["scheduled"],
            "deferred": counts["deferred"],
            "finished": counts["finished"],
            "paused": pause["suspended"],
        }
    releases, parked_warnings = release_queue_facts(
        queues,
        known_queues(client),
        lambda names: _depths(client, names),
        lambda name: sum(1 for w in every_worker if name in w.queues and w.name not in gone),
    )
    for queue, found in releases.items():
        facts[queue]["releases"] = found
        facts[queue]["parked"] = sum(f["parked"] for f in found.values())
    listed = []
    for worker in workers:
        entry = worker.as_dict()
        if worker.name in gone:
            entry["state"] = "gone"
        listed.append(entry)
    warnings = [
        f"queue {queue} has {f['depth']} job(s) waiting and no live worker consumes it"
        for queue, f in facts.items()
        if f["depth"] and not f["consumers"]
    ]
    warnings += parked_warnings
    if pause["suspended"] and not any(worker_gone_reason(st, now) is None for st in states.values()):
        warnings.append(NO_WORKER_WHILE_SUSPENDED.format(db=_db_number(client)))
    return {
        "queues": facts,
        "workers": listed,
        "suspended": pause["suspended"],
        "suspension_ttl": pause["ttl"],
        "abandoned": abandoned,
        "warnings": warnings,
    }


def known_queues(client) -> list[str]:
    return sorted(as_text(k)[len(QUEUE_PREFIX) :] for k in client.smembers(QUEUES_KEY))


def _depths(client, queues: list[str]) -> dict[str, int]:
    """Jobs waiting per queue, one pipelined LLEN each."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue_key(queue))
        return dict(zip(queues, (int(n) for n in pipe.execute())))


# --- replay and health gate (task_requeue, rollout_check) ---
#
# Replay moves registry entries back onto queues with one Lua script per batch of 1,000 (atomic
# per batch, ZREM-guarded so a second run finds nothing); the health gate counts finished and
# failed registry entries whose job hash names a worker of the release. Job data is never read.


# One batch of registry entries back onto their queues, atomically: an entry is moved only if it is
# still in the registry (ZREM guard: a second run, or a concurrent `rq requeue`, finds nothing to
# move) and its job is neither queued nor finished already. What is written is what rq's own
# FailedJobRegistry.requeue writes (status queued, started_at/ended_at/exc_info cleared, enqueued_at
# now, RPUSH on the job's queue, the queue in rq:queues); job data is never read.
_REQUEUE_ENTRIES_LUA = """
local registry, now, target = KEYS[1], ARGV[1], ARGV[2]
local job_prefix, queue_prefix, queues_key = ARGV[3], ARGV[4], ARGV[5]
local step = tonumber(ARGV[6])  -- 1: entries are job ids; 3: (entry, job id, worker judged gone)
local moved, missing, state, gone, taken = {}, 0, 0, 0, 0
local pushes = {}
for i = 7, #ARGV, step do
  local member = ARGV[i]
  local job_id, was_run_by = member, nil
  if step == 3 then job_id, was_run_by = ARGV[i + 1], ARGV[i + 2] end
  local job_key = job_prefix .. job_id
  local fields = redis.call('HMGET', job_key, 'status', 'origin', 'exc_info', 'worker_name')
  local status, queue = fields[1], target
  if queue == '' then queue = fields[2] end
  -- A started entry whose job still says queued and sits in its intermediate queue: its worker went
  -- away after the dequeue, before its work horse took the job (see started_runs). Nothing runs it.
  local parked = step == 3 and status == 'queued' and fields[2]
    and redis.call('LPOS', queue_prefix .. fields[2] .. ':intermediate', job_id)
  if not status and not fields[2] then
    missing = missing + 1
  elseif (status == 'queued' and not parked) or status == 'finished' or not queue or queue == '' then
    state = state + 1
  elseif was_run_by and status == 'started' and (fields[4] or '') ~= was_run_by then
    -- Judged by the worker that ran it, gone; since then a live worker took it (a replayed job's
    -- hash names its last worker until the work horse of the next one prepares it).
    taken = taken + 1
  elseif redis.call('ZREM', registry, member) == 0 then
    gone = gone + 1
  else
    if queue == fields[2] then
      redis.call('HSET', job_key, 'status', 'queued', 'started_at', '', 'ended_at', '', 'enqueued_at', now)
    else
      redis.call('HSET', job_key, 'status', 'queued', 'started_at', '', 'ended_at', '', 'enqueued_at', now,
                 'origin', queue)
    end
    if fields[3] then redis.call('HDEL', job_key, 'exc_info') end  -- RQ 1.x keeps it in the job hash
    -- A worker that died between its started entry and its work horse left the id parked too.
    if fields[2] then redis.call('LREM', queue_prefix .. fields[2] .. ':intermediate', 1, job_id) end
    local ids = pushes[queue]
    if not ids then
      ids = {}
      pushes[queue] = ids
    end
    ids[#ids + 1] = job_id
    moved[#moved + 1] = job_id
  end
end
for queue, ids in pairs(pushes) do
  for start = 1, #ids, 1000 do
    redis.call('RPUSH', queue_prefix .. queue, unpack(ids, start, math.min(start + 999, #ids)))
  end
  redis.call('SADD', queues_key, queue_prefix .. queue)
end
return {moved, missing, state, gone, taken}
"""

# Everything on one queue onto another, a batch at a time (LPOP count: Redis >= 6.2).
_MOVE_QUEUE_LUA = """
local source, now, target, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local job_prefix, queue_prefix, queues_key = ARGV[4], ARGV[5], ARGV[6]
local ids = redis.call('LPOP', source, count)
if not ids then return {} end
for _, job_id in ipairs(ids) do
  local job_key = job_prefix .. job_id
  if redis.call('EXISTS', job_key) == 1 then
    redis.call('HSET', job_key, 'origin', target, 'enqueued_at', now)
  end
  redis.call('RPUSH', queue_prefix .. target, job_id)
end
redis.call('SADD', queues_key, queue_prefix .. target)
return ids
"""

RQ_REQUEUE_BATCH = 1000
RQ_BATCHES_PER_ROUND_TRIP = 8


def _rq_job_fields(client, job_ids: list[str], fields: tuple[str, ...]) -> list[list[bytes | None]]:
    rows: list[list[bytes | None]] = []
    for chunk in batched(job_ids, 5000):
        pipe = client.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hmget(job_key(job_id), *fields)
        rows.extend(pipe.execute())
    return rows


def worker_states(client) -> dict[str, dict[str, float | bool | None]]:
    """Birth and last heartbeat of every registered worker (hash not expired, no death), and whether
    its named connection is open (None when CLIENT LIST is refused)."""
    connected = live_worker_names(client)
    return {
        worker.name: {
            "birth": worker.birth.timestamp() if worker.birth else None,
            "last_heartbeat": worker.last_heartbeat.timestamp() if worker.last_heartbeat else None,
            "connected": None if connected is None else worker.name in connected,
        }
        for worker in list_workers(client)
    }


def worker_gone_reason(
    state: dict | None, now: float, heartbeat_timeout: float = RQ_DEFAULT_HEARTBEAT_TIMEOUT
) -> str | None:
    """The one liveness rule of RQ workers (queue_pause, queue_info, task_requeue, rollout_check).

    Gone: its hash expired or says it died, or no connection is named after it (a SIGKILLed or
    OOM-killed worker leaves a hash that looks alive for minutes, but its connection closes at
    once). Only when CLIENT LIST is refused is a heartbeat older than ``heartbeat_timeout`` the
    sign (a busy worker refreshes it every 30 s only).
    """
    if state is None:
        return "its worker is gone"
    if state["connected"] is False:
        return "its worker is gone (no connection named after it: killed)"
    if (
        state["connected"] is None
        and state["last_heartbeat"] is not None
        and now - state["last_heartbeat"] > heartbeat_timeout
    ):
        return f"its worker's last heartbeat is older than {heartbeat_timeout:g} s"
    return None


def abandoned_reason(
    expires_at: float | None,
    worker_name: str | None,
    states: dict[str, dict],
    started_at: float | None,
    now: float,
    heartbeat_timeout: float,
) -> str | None:
    """Why a started entry is abandoned, or None when its worker may still be running it.

    An entry whose job names no worker is left to RQ's own expiry (its registry score).
    """
    if expires_at is not None and expires_at < now:
        return "its heartbeat expired"
    if not worker_name:
        return None
    worker = states.get(worker_name)
    gone = worker_gone_reason(worker, now, heartbeat_timeout)
    if gone:
        return gone
    if worker["birth"] is not None and started_at is not None and worker["birth"] > started_at:
        return "its worker restarted after it started"
    return None


def _rq_select(
    client, registry: str, members: list[bytes], selection: Selection, report: SourceReport, *, abandoned: dict | None
) -> list[tuple]:
    """(entry, job id) pairs of a registry that the filters accept; for started entries (``abandoned``)
    (entry, job id, worker) triples of the abandoned ones, the worker being the one judged gone."""
    if abandoned is not None:
        job_ids = [parse_started_member(member)[0] for member, _score in members]
    else:
        job_ids = [as_text(member) for member in members]
    need_fields = selection.filters_anything or abandoned is not None
    if not need_fields:
        return list(zip(members, job_ids))
    rows = _rq_job_fields(client, job_ids, ("worker_name", "ended_at", "started_at", "description"))
    workers = None
    if abandoned is not None:
        workers = worker_states(client)
        runs = started_runs(client, [parse_started_member(member) for member, _score in members])
        rows = [
            [worker, ended_at, started, description]
            for (worker, started), (_w, ended_at, _s, description) in zip(runs, rows)
        ]
    chosen = []
    now = time.time()
    scored = members if abandoned is not None else [(member, None) for member in members]
    for (member, score), job_id, (worker_name, ended_at, started_at, description) in zip(scored, job_ids, rows):
        started = parse_time(started_at)
        if abandoned is not None:
            name = as_text(worker_name)
            reason = abandoned_reason(score, name, workers, started, now, abandoned["heartbeat_timeout"])
            if reason is None:
                report.skip("worker still running it")
                continue
        if not selection.accepts(
            worker=worker_name,
            ended_at=parse_time(ended_at) or started,
            task_name=task_name_from_description(description),
        ):
            report.skip("filtered out")
            continue
        chosen.append((member, job_id) if abandoned is None else (member, job_id, as_text(worker_name) or ""))
    return chosen


def _rq_run_batches(
    client,
    registry: str,
    entries: list[tuple[bytes, str]],
    to_queue: str,
    report: SourceReport,
    check_mode: bool,
    plain: bool,
) -> None:
    """Move ``entries`` (registry member, job id[, worker judged gone]); ``plain`` when members are the job
    ids themselves."""
    report.selected += len(entries)
    if check_mode:
        # Same guards as the script, read-only: entries whose job is gone or already queued/finished do not count.
        rows = _rq_job_fields(client, [entry[1] for entry in entries], ("status", "origin"))
        parked = [False] * len(entries)
        if not plain:
            with client.pipeline(transaction=False) as pipe:
                for (_member, job_id, *_rest), (_status, origin) in zip(entries, rows):
                    pipe.lpos(intermediate_queue_key(as_text(origin)), job_id)
                parked = [position is not None for position in pipe.execute()]
        ready = []
        for (_member, job_id, *_rest), (status, origin), held in zip(entries, rows, parked):
            if status is None and origin is None:
                report.skip("job data expired")
            elif (status == b"queued" and not held) or status == b"finished" or not (to_queue or origin):
                report.skip("already queued or finished")
            else:
                ready.append(job_id)
        report.replayed += len(ready)
        report.add_ids(ready)
        return
    script_sha = client.script_load(_REQUEUE_ENTRIES_LUA)
    now = utcformat(datetime.now(timezone.utc))
    head = [now, to_queue or "", JOB_PREFIX, QUEUE_PREFIX, QUEUES_KEY]
    # Several batches per round trip: the server runs one batch while the next is still being sent.
    # Each batch is its own script call, so each is atomic; the pipeline is not a transaction.
    for group in batched(entries, RQ_REQUEUE_BATCH * RQ_BATCHES_PER_ROUND_TRIP):
        with client.pipeline(transaction=False) as pipe:
            for chunk in batched(group, RQ_REQUEUE_BATCH):
                if plain:
                    args = [*head, 1, *(member for member, _job_id in chunk)]
                else:
                    args = [*head, 3, *(part for triple in chunk for part in triple)]
                pipe.evalsha(script_sha, 1, registry, *args)
            replies = pipe.execute()
        for moved, missing, state, gone, taken in replies:
            report.replayed += len(moved)
            if len(report.ids) < IDS_CAP:
                report.add_ids([as_text(job_id) for job_id in moved[: IDS_CAP - len(report.ids)]])
            report.skip("job data expired", missing)
            report.skip("already queued or finished", state)
            report.skip("no longer in the registry", gone)
            report.skip("taken by a live worker meanwhile", taken)


def _rq_replay_entries(client, registry, entries, to_queue, report, check_mode, source, remaining):
    """Move ``entries`` of ``registry`` within the ``remaining`` limit (None: no limit); what is left of it."""
    if remaining is not None:
        report.skip("over the limit", max(0, len(entries) - remaining))
        entries = entries[:remaining]
    before = report.replayed
    _rq_run_batches(client, registry, entries, to_queue or "", report, check_mode, plain=source == "failed")
    return None if remaining is None else remaining - (report.replayed - before)


# What RQ writes when its maintenance fails a job no worker will finish: a job a worker took out of
# the queue (BLMOVE) and never started (IntermediateQueue.cleanup, after a minute), and a started
# job whose worker stopped renewing it (StartedJobRegistry.cleanup). The task never ran to a
# failure of its own: its worker went away. 2.x writes it to the job's results stream, 1.x to the
# job hash.
RQ_ABANDONED_FAILURES = ("Job was stuck in intermediate queue", "due to AbandonedJobError")


def _exc_string(raw: bytes | None, encoded: bool) -> str:
    if not raw:
        return ""
    with contextlib.suppress(ValueError, zlib.error):
        return zlib.decompress(base64.b64decode(raw) if encoded else raw).decode("utf-8", "replace")
    return as_text(raw)


def _rq_failed_by_rq(client, registry: str) -> list[bytes]:
    """Members of a failed registry that RQ itself failed as abandoned (RQ_ABANDONED_FAILURES)."""
    members = client.zrange(registry, 0, -1)
    found = []
    for chunk in batched(members, 5000):
        with client.pipeline(transaction=False) as pipe:
            for member in chunk:
                pipe.xrevrange(f"rq:results:{as_text(member)}", count=1)
                pipe.hget(job_key(as_text(member)), "exc_info")
            replies = pipe.execute()
        for member, latest, legacy in zip(chunk, replies[::2], replies[1::2]):
            text = _exc_string(latest[0][1].get(b"exc_string"), encoded=True) if latest else ""
            text = text or _exc_string(legacy, encoded=False)
            if any(sign in text for sign in RQ_ABANDONED_FAILURES):
                found.append(member)
    return found


def replay(
    client,
    *,
    source: str,
    queues: list[str],
    selection: Selection,
    to_queue: str | None = None,
    from_queue: str | None = None,
    heartbeat_timeout: float = RQ_DEFAULT_HEARTBEAT_TIMEOUT,
    check_mode: bool = False,
) -> SourceReport:
    """Replay RQ jobs from ``source`` (failed / abandoned / queue); never unpickles job data."""
    report = SourceReport(source)
    remaining = selection.limit
    if source == "queue":
        key = queue_key(from_queue)
        total = client.llen(key)
        report.candidates = report.selected = total if remaining is None else min(total, remaining)
        if check_mode:
            ids = [as_text(job_id) for job_id in client.lrange(key, 0, min(report.selected, IDS_CAP) - 1)]
            report.replayed = report.selected
            report.add_ids(ids)
            return report
        script = client.register_script(_MOVE_QUEUE_LUA)
        now = utcformat(datetime.now(timezone.utc))
        left = report.selected
        while left > 0:
            batch = min(RQ_REQUEUE_BATCH, left)
            ids = script(keys=[key], args=[now, to_queue, batch, JOB_PREFIX, QUEUE_PREFIX, QUEUES_KEY])
            if not ids:
                break
            left -= len(ids)
            report.replayed += len(ids)
            report.add_ids([as_text(job_id) for job_id in ids])
        return report

    for queue in queues:
        if remaining is not None and remaining <= 0:
            break
        if source == "failed":
            registry = registry_key("failed", queue)
            members = client.zrange(registry, 0, -1)
            report.candidates += len(members)
            entries = _rq_select(client, registry, members, selection, report, abandoned=None)
        else:
            registry = registry_key("started", queue)
            members = client.zrange(registry, 0, -1, withscores=True)
            report.candidates += len(members)
            entries = _rq_select(
                client, registry, members, selection, report, abandoned={"heartbeat_timeout": heartbeat_timeout}
            )
        remaining = _rq_replay_entries(client, registry, entries, to_queue, report, check_mode, source, remaining)
        if source == "abandoned":
            # RQ's own maintenance may have got there first: it fails what it finds abandoned.
            registry = registry_key("failed", queue)
            members = _rq_failed_by_rq(client, registry)
            report.candidates += len(members)
            entries = _rq_select(client, registry, members, selection, report, abandoned=None)
            remaining = _rq_replay_entries(client, registry, entries, to_queue, report, check_mode, "failed", remaining)
    if source == "abandoned" and not (selection.failed_by or selection.since or selection.task_names):
        _replay_parked(client, queues, to_queue, report, check_mode)
    return report


# The scripts that put a job back (_put_back) take KEYS: its queue, that queue's intermediate queue,
# the job's hash, the queue it goes to, rq:queues; ARGV: the job id, the queue it goes to.
# Back to the front of its queue, only if it is still parked (a worker that took it meanwhile wins).
_UNSTICK_LUA = """
if redis.call('LREM', KEYS[2], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'status', 'queued', 'origin', ARGV[2])
redis.call('SADD', KEYS[5], KEYS[4])
redis.call('LPUSH', KEYS[4], ARGV[1])
return 1
"""
STUCK_SETTLE = 1.0  # seconds a job must stay parked where no worker takes it to be replayed from there


def _in_intermediate(client, queues: list[str]) -> set[tuple[str, str]]:
    """``(queue, job_id)`` of jobs a worker moved into ``<queue>:intermediate`` (BLMOVE) and has not
    taken. Killed or stopped between its dequeue and its started registry, it never will: RQ fails
    such jobs only at its maintenance, every 10 minutes ("Job was stuck in intermediate queue"), and
    until then nothing runs them. A worker takes a job within milliseconds."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.lrange(intermediate_queue_key(queue), 0, -1)
        found = {(queue, as_text(job_id)) for queue, ids in zip(queues, pipe.execute()) for job_id in ids}
    return {job for job in found - _started_entries(client, queues) if not is_wake_job(job[1])}


def _started_entries(client, queues: list[str]) -> set[tuple[str, str]]:
    """``(queue, job_id)`` of the entries of the started registries of ``queues``. An RQ 2.x worker adds
    ``<job>:<execution>`` before it forks the work horse, which only then marks the job started and
    takes it out of the intermediate queue. Such a job is the started registry's: running, or
    abandoned and replayed from there (its entry goes with it)."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrange(started_registry_key(queue), 0, -1)
        replies = pipe.execute()
    return {(queue, parse_started_member(member)[0]) for queue, members in zip(queues, replies) for member in members}


STUCK_FIRST_LOOK = 0.1  # seconds after which a job in transit under a live worker has long moved on


def _still_after(finds: tuple[Callable[[], set], ...], settle: float) -> list[list[tuple[str, str]]]:
    """What each of ``finds`` returns now and still returns ``settle`` s later: one wait for all of
    them, and none when none finds anything.

    Under load a look nearly always finds a job or two in transit, which a live worker moves on
    within milliseconds: a second look after ``STUCK_FIRST_LOOK`` s drops them, and only what is
    still there is watched for the rest of ``settle``.
    """
    seen = [find() for find in finds]
    first_look = min(STUCK_FIRST_LOOK, settle)
    for wait in (first_look, settle - first_look):
        if not any(seen):
            return [[] for _ in finds]
        time.sleep(wait)
        seen = [kept & find() if kept else set() for kept, find in zip(seen, finds)]
    return [sorted(kept) for kept in seen]


def _put_back(client, jobs: list[tuple[str, str]], lua: str, to_queue: str | None, report, check_mode: bool) -> None:
    """Each ``(queue, job_id)`` of ``jobs`` back to the front of ``to_queue`` or its own, as ``lua`` allows."""
    report.candidates += len(jobs)
    if not jobs or check_mode:
        report.replayed += len(jobs)
        report.add_ids([job_id for _queue, job_id in jobs])
        return
    script = client.register_script(lua)
    moved = [(queue, job_id) for queue, job_id in jobs if script(
        keys=[queue_key(queue), intermediate_queue_key(queue), job_key(job_id), queue_key(to_queue or queue),
              QUEUES_KEY],
        args=[job_id, to_queue or queue],
    )]  # fmt: skip
    report.replayed += len(moved)
    report.add_ids([job_id for _queue, job_id in moved])


def _queued_in_no_queue(client, queues: list[str]) -> set[tuple[str, str]]:
    """``(origin, job_id)`` of jobs of ``queues`` whose hash says queued but whose id is in neither
    their queue nor its intermediate queue nor its started registry: popped by a worker that never
    took them. A worker of several queues dequeues with BLPOP (RQ 2.x moves a job into an intermediate
    queue only for a single queue); stopped between its dequeue and its started registry - a warm
    shutdown of an idle worker raises right there - it drops the job, and nothing runs it ever."""
    keys = (as_text(key)[len(JOB_PREFIX) :] for key in client.scan_iter(match=f"{JOB_PREFIX}*", count=1000))
    ids = [job_id for job_id in keys if ":" not in job_id]  # not rq:job:<id>:dependents and the like
    candidates = [
        (as_text(origin), job_id)
        for job_id, (status, origin) in zip(ids, _rq_job_fields(client, ids, ("status", "origin")))
        if as_text(status) == "queued" and as_text(origin) in queues and not is_wake_job(job_id)
    ]
    with client.pipeline(transaction=False) as pipe:
        for origin, job_id in candidates:
            pipe.lpos(queue_key(origin), job_id)
            pipe.lpos(intermediate_queue_key(origin), job_id)
        places = pipe.execute()
    nowhere = {job for i, job in enumerate(candidates) if places[2 * i] is None and places[2 * i + 1] is None}
    return nowhere - _started_entries(client, queues) if nowhere else nowhere


# Back to the front of its queue, only if it still says queued and sits in no queue (_put_back's KEYS).
_UNDROP_LUA = """
if redis.call('HGET', KEYS[3], 'status') ~= 'queued' then return 0 end
if redis.call('LPOS', KEYS[1], ARGV[1]) or redis.call('LPOS', KEYS[2], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[3], 'origin', ARGV[2])
redis.call('SADD', KEYS[5], KEYS[4])
redis.call('LPUSH', KEYS[4], ARGV[1])
return 1
"""


def _replay_parked(client, queues: list[str], to_queue: str | None, report, check_mode: bool) -> None:
    """Put back the jobs no worker will ever take: stuck in an intermediate queue (``_in_intermediate``),
    or dropped by a dequeue (``_queued_in_no_queue``), each still so ``STUCK_SETTLE`` s later. A live
    worker takes what it popped within milliseconds."""
    stuck, dropped = _still_after(
        (lambda: _in_intermediate(client, queues), lambda: _queued_in_no_queue(client, queues)), STUCK_SETTLE
    )
    _put_back(client, stuck, _UNSTICK_LUA, to_queue, report, check_mode)
    _put_back(client, dropped, _UNDROP_LUA, to_queue, report, check_mode)


def backlog(client, queues: list[str]) -> int:
    """Jobs waiting on ``queues``."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue_key(queue))
    return sum(pipe.execute())


def outcomes(client, queues: list[str], worker_ok, since: float, until: float) -> tuple[int, int]:
    """Successes and failures of jobs that ended in [since, until] on workers ``worker_ok`` accepts.

    Registries score entries by their expiry (end + result/failure TTL >= end), so entries scored
    below ``since`` cannot have ended in the window and are not read.
    """
    counts = []
    for kind in ("finished", "failed"):
        job_ids: list[str] = []
        for queue in queues:
            job_ids.extend(as_text(m) for m in client.zrangebyscore(registry_key(kind, queue), since, "+inf"))
        rows = _rq_job_fields(client, job_ids, ("worker_name", "ended_at"))
        count = 0
        for worker_name, ended_at in rows:
            ended = parse_time(ended_at)
            if ended is not None and since <= ended <= until and worker_name and worker_ok(as_text(worker_name)):
                count += 1
        counts.append(count)
    return counts[0], counts[1]


def release_workers(client, worker_ok) -> list[str]:
    """Registered workers ``worker_ok`` accepts, without those that are gone: a SIGKILLed or OOM-killed
    worker leaves a hash that looks alive for minutes, but no connection named after it."""
    names = {worker.name for worker in list_workers(client) if worker_ok(worker.name)}
    return sorted(names - gone_workers(client, names))


def observe(client, queues: list[str], worker_ok, window: float) -> Observation:
    """The health gate's view of RQ over ``window`` seconds: jobs of ``worker_ok``'s workers that ended
    in it (finished / failed registries), the release's live workers, and the backlog before and after."""
    backlog_before = backlog(client, queues)
    start = time.time()
    time.sleep(window)
    end = time.time()
    successes, failures = outcomes(client, queues, worker_ok, start, end)
    workers = release_workers(client, worker_ok)
    return Observation(
        window=window,
        successes=successes,
        failures=failures,
        live_workers=len(workers),
        backlog_before=backlog_before,
        backlog_after=backlog(client, queues),
        workers=workers,
    )


def halt_workers(client, names: list[str]) -> list[str]:
    """Tell each worker of ``names`` to stop at once (RQ's own ``shutdown`` command on
    ``rq:pubsub:<name>``): a warm shutdown, the job it runs finishes, no new one starts. Other
    workers on the same db go on (unlike a pause, which suspends them all). Returns the workers that
    received it (a subscriber was listening)."""
    if not names:
        return []
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.publish(f"rq:pubsub:{name}", json.dumps({"command": "shutdown"}))
        receivers = pipe.execute()
    return [name for name, count in zip(names, receivers) if count]
