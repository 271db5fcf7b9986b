# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis side of a snapshot: which keys it covers (SCAN, never KEYS), their DUMP and a digest
of their value, and how a restore puts them back in one MULTI/EXEC transaction.

Every Redis error becomes a ``RedisFailed`` (a SnapshotError) here, so callers never need redis-py:
a snapshot of files only works, and reports file errors as file errors, where redis-py is absent.
Inside ``errors_in_words`` (the module sets it around its work) a refusal is said as every module
says it (``redis_errors``): which user, at which host:port/db, lacks which command or key, and what for.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.events import EVENTS_STREAM
from ansible_collections.queueops.rollback.plugins.module_utils.identity import as_text
from ansible_collections.queueops.rollback.plugins.module_utils.redis_connection import (
    RedisConnectionError,
    redis_errors,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    Limits,
    RestorePlan,
    SnapshotError,
    key_from_json,
    key_label,
)

try:
    from redis import RedisError, ResponseError
except ImportError:  # pragma: no cover - without redis-py there is no client, so nothing raises these

    class RedisError(Exception):  # type: ignore[no-redef]
        """Stands in for redis-py's error class; never raised (it is no OSError: file errors stay file errors)."""

    class ResponseError(RedisError):  # type: ignore[no-redef]
        """Stands in for redis-py's error class; never raised."""


SCAN_COUNT = 1000
BATCH = 1000


class RedisFailed(SnapshotError):
    """Redis refused or failed a read or write of the snapshot's keys."""


class KeysPartlyRestored(RedisFailed):
    """The restore transaction ran but Redis refused some of its commands; ``done`` holds those it applied."""

    def __init__(self, message: str, done: RestorePlan) -> None:
        super().__init__(message)
        self.done = done


# The connection options and what the module does (``errors_in_words``), while it works on keys.
_SPEAKER: ContextVar[tuple[Mapping[str, Any], str] | None] = ContextVar("snapshot_keys_speaker", default=None)


@contextlib.contextmanager
def errors_in_words(params: Mapping[str, Any], purpose: str) -> Iterator[None]:
    """Inside the block, a Redis error of this file is said as ``redis_errors`` says it for ``params``.

    ``purpose`` is what the module does, after "to" (``"take snapshot orders"``): a refused SCAN
    reads "... may not run the SCAN command, needed to find the keys matching cfg:* to take
    snapshot orders (grant it with the ACL rule +scan)".
    """
    token = _SPEAKER.set((params, purpose))
    try:
        yield
    finally:
        _SPEAKER.reset(token)


def _in_words(exc: BaseException, step: str, keys: Sequence[Any] = ()) -> str | None:
    """``exc`` in the words of ``redis_errors`` (an ACL refusal, a lost connection, a read-only
    replica...), or None outside ``errors_in_words`` and for errors it leaves to the caller."""
    speaker = _SPEAKER.get()
    if speaker is None:
        return None
    params, purpose = speaker
    try:
        with redis_errors(params, f"{step} to {purpose}", keys=[_label(key) for key in keys]):
            raise exc
    except RedisConnectionError as said:
        return str(said)
    except Exception:  # noqa: BLE001 - not one redis_errors explains: the caller says it its own way
        return None


def _label(key: Any) -> str:
    return key_label(key) if isinstance(key, bytes) else str(key)


@contextlib.contextmanager
def _redis_step(step: str, keys: Sequence[Any] = ()) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise RedisFailed(_in_words(exc, step, keys) or f"Redis failed to {step}: {exc}") from None


# ------------------------------------------------------------------------------------ read


def _digest_items(kind: bytes, items: list[bytes]) -> str:
    digest = hashlib.sha256(kind + b"\0")
    for item in items:
        digest.update(len(item).to_bytes(8, "big"))
        digest.update(item)
    return digest.hexdigest()


def _queue_value_read(pipe, name: bytes, kind: str) -> None:
    if kind == "string":
        pipe.get(name)
    elif kind == "list":
        pipe.lrange(name, 0, -1)
    elif kind == "set":
        pipe.smembers(name)
    elif kind == "hash":
        pipe.hgetall(name)
    elif kind == "zset":
        pipe.zrange(name, 0, -1, withscores=True)
    else:  # streams (radix tree, stable DUMP) and module types
        pipe.dump(name)


def _value_digest(kind: str, value: Any) -> str | None:
    """A digest of the key's value that does not depend on its internal encoding."""
    if value is None:
        return None
    if kind == "string":
        items = [value]
    elif kind == "list":
        items = list(value)
    elif kind == "set":
        items = sorted(value)
    elif kind == "hash":
        items = [part for pair in sorted(value.items()) for part in pair]
    elif kind == "zset":
        items = [part for member, score in value for part in (member, repr(float(score)).encode())]
    else:
        items = [value]
    return _digest_items(kind.encode(), items)


def scan_keys(client, patterns: list[str]) -> list[bytes]:
    """Every key matching any pattern, via SCAN (never KEYS), sorted and without duplicates.

    The event stream is never part of a snapshot: a restore must not roll back the record of it.
    """
    names: set[bytes] = set()
    with _redis_step(f"find the keys matching {', '.join(patterns)}"):
        for pattern in patterns:
            for name in client.scan_iter(match=pattern, count=SCAN_COUNT):
                names.add(name)
    names.discard(EVENTS_STREAM.encode())
    return sorted(names)


def read_key_states(
    client, names: list[bytes], *, with_payload: bool, limits: Limits | None = None
) -> dict[bytes, dict[str, Any]]:
    """Type, PTTL, value digest (and DUMP payload, counted against ``limits``) of keys, pipelined in batches.

    Keys that vanish between the reads are left out.
    """
    states: dict[bytes, dict[str, Any]] = {}
    for start in range(0, len(names), BATCH):
        batch = names[start : start + BATCH]
        with _redis_step("read the keys", batch):
            present = _read_types(client, batch, states, with_payload, limits)
            _read_digests(client, present, states)
    return states


def _read_types(
    client, batch: list[bytes], states: dict[bytes, dict[str, Any]], with_payload: bool, limits: Limits | None
) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for name in batch:
        pipe.type(name)
        pipe.pttl(name)
        if with_payload:
            pipe.dump(name)
    replies = pipe.execute()
    step = 3 if with_payload else 2
    present = []
    for index, name in enumerate(batch):
        kind = as_text(replies[index * step])
        if kind == "none":
            continue
        state = {"type": kind, "ttl_ms": int(replies[index * step + 1])}
        if with_payload:
            payload = replies[index * step + 2]
            if payload is None:
                continue
            if limits is not None:
                limits.count_bytes(len(payload), f"key {key_label(name)}")
            state["payload"] = payload
        states[name] = state
        present.append(name)
    return present


def _read_digests(client, present: list[bytes], states: dict[bytes, dict[str, Any]]) -> None:
    pipe = client.pipeline(transaction=False)
    for name in present:
        _queue_value_read(pipe, name, states[name]["type"])
    for name, value in zip(present, pipe.execute()):
        digest = _value_digest(states[name]["type"], value)
        if digest is None:
            del states[name]
        else:
            states[name]["value_digest"] = digest


# ---------------------------------------------------------------------------------- restore


def plan_keys(plan: RestorePlan, manifest: dict[str, Any], client) -> None:
    """The key side of ``plan``: keys to restore (missing, changed, TTL gained or lost) and to delete."""
    wanted = {key_from_json(entry): entry for entry in manifest["keys"]}
    now_matching = set(scan_keys(client, manifest["redis_patterns"]))
    current = read_key_states(client, sorted(now_matching | set(wanted)), with_payload=False)
    for key_name, entry in wanted.items():
        state = current.get(key_name)
        if state is None:
            plan.key_restores.append((key_name, entry, "missing"))
        elif state["type"] != entry["type"] or state["value_digest"] != entry["value_digest"]:
            plan.key_restores.append((key_name, entry, "changed"))
        elif (state["ttl_ms"] > 0) != (entry["ttl_ms"] > 0):
            plan.key_restores.append((key_name, entry, "ttl"))
    plan.key_deletes = sorted(name for name in now_matching if name not in wanted and name in current)


def apply_keys(plan: RestorePlan, client, done: RestorePlan) -> None:
    """RESTORE ... REPLACE and DEL in one MULTI/EXEC; ``done`` gets exactly the commands Redis applied.

    RedisFailed when the transaction did not run (nothing applied: refused when queued, EXECABORT,
    or the connection failed); KeysPartlyRestored when it ran but some commands failed inside EXEC
    (Redis does not roll back the others).
    """
    pipe = client.pipeline(transaction=True)
    for key_name, entry, _why in plan.key_restores:
        payload = plan.payloads[entry["offset"] : entry["offset"] + entry["size"]]
        pipe.restore(key_name, entry["ttl_ms"], payload, replace=True)
    batches = [plan.key_deletes[start : start + BATCH] for start in range(0, len(plan.key_deletes), BATCH)]
    for batch in batches:
        pipe.delete(*batch)
    step = "restore and delete keys in one transaction"
    touched = [name for name, _entry, _why in plan.key_restores] + list(plan.key_deletes)
    try:
        results = pipe.execute(raise_on_error=False)
    except ResponseError as exc:  # refused when queued: EXEC answers EXECABORT and runs nothing
        said = _in_words(exc, step, touched) or exc
        raise RedisFailed(f"Redis refused the restore transaction, so no key was changed: {said}") from None
    except RedisError as exc:
        said = _in_words(exc, step, touched) or exc
        raise RedisFailed(
            f"the restore transaction failed ({said}); if it ran before the connection failed, "
            "running the restore again converges"
        ) from None
    errors = []
    for restore, result in zip(plan.key_restores, results):
        if isinstance(result, Exception):
            errors.append(f"RESTORE {key_label(restore[0])}: {_in_words(result, step, [restore[0]]) or result}")
        else:
            done.key_restores.append(restore)
    for batch, result in zip(batches, results[len(plan.key_restores) :]):
        if isinstance(result, Exception):
            errors.append(f"DEL of {len(batch)} key(s): {_in_words(result, step, batch) or result}")
        else:
            done.key_deletes.extend(batch)
    if errors:
        raise KeysPartlyRestored(
            f"Redis refused {len(errors)} of the {len(results)} commands of the restore transaction "
            f"and applied the others: {errors[0]}",
            done,
        )
