# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot store on a host: take, list, restore, delete and prune the snapshots of a name,
each change under the name's lock and recorded in its history.

A snapshot is written into ``<root>/<name>/.tmp-*`` and renamed into place, so a half-written
snapshot is never listed. Directories are 0700 and files 0600: snapshots may hold secrets.
The layout and the manifest are described in ``snapshot_manifest``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import (
    FileLock,
    append_jsonl,
    fsync_dir,
    utc_iso,
)
from ansible_collections.queueops.rollback.plugins.module_utils.identity import InvalidName, validate_name
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_diff import compare
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_files import (
    Places,
    apply_files,
    plan_files,
    scan_paths,
    write_file_pack,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_keys import (
    KeysPartlyRestored,
    RedisFailed,
    apply_keys,
    plan_keys,
    read_key_states,
    scan_keys,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    FILES_BLOB,
    HISTORY,
    KEYS_BLOB,
    LOCK,
    MANIFEST,
    MANIFEST_SUM,
    SUMMARY,
    TMP_PREFIX,
    CorruptSnapshot,
    Limits,
    RestoreInterrupted,
    RestorePlan,
    SnapshotError,
    UnknownSnapshot,
    build_manifest,
    canonical_json,
    key_from_json,
    load_manifest,
    verify_snapshot,
)

_ID_TIME = "%Y%m%dT%H%M%SZ"
_SUMMARY_FIELDS = (
    "id",
    "created",
    "reason",
    "size",
    "files",
    "dirs",
    "keys",
    "paths",
    "redis_keys",
    "content_digest",
    "host",
    "error",
)


def validate_snapshot_name(value: str, what: str = "name") -> str:
    try:
        return validate_name(value, what)
    except InvalidName as exc:
        raise SnapshotError(str(exc)) from None


def name_dir(root: str, name: str) -> Path:
    return Path(root) / validate_snapshot_name(name)


# ------------------------------------------------------------------------------------ listing


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _created_from_id(snap_id: str) -> float | None:
    try:
        stamp = datetime.datetime.strptime(snap_id[:16], _ID_TIME).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return stamp.timestamp()


def _summary_of(snapdir: Path) -> dict[str, Any]:
    try:
        summary = _read_json(snapdir / SUMMARY)
        if not isinstance(summary, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        created = _created_from_id(snapdir.name)
        unreadable: dict[str, Any] = {"id": snapdir.name, "created_ts": created or 0.0}
        if created:
            unreadable["created"] = utc_iso(created)
        unreadable["error"] = f"summary unreadable: {getattr(exc, 'strerror', None) or exc}"
        return unreadable
    summary["id"] = snapdir.name
    return summary


def list_snapshots(root: str, name: str) -> list[dict[str, Any]]:
    """Summaries of the complete snapshots of ``name``, oldest first."""
    base = name_dir(root, name)
    if not base.is_dir():
        return []
    summaries = []
    for child in base.iterdir():
        if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        summaries.append(_summary_of(child))
    summaries.sort(key=lambda item: (float(item.get("created_ts") or 0.0), item["id"]))
    return summaries


def resolve_id(root: str, name: str, snap_id: str | None) -> str:
    snapshots = list_snapshots(root, name)
    if snap_id in (None, "", "latest"):
        if not snapshots:
            raise UnknownSnapshot(f"no snapshot of {name!r} under {root}")
        return snapshots[-1]["id"]
    validate_snapshot_name(snap_id, "id")
    if not any(item["id"] == snap_id for item in snapshots):
        known = ", ".join(item["id"] for item in snapshots[-5:]) or "none"
        raise UnknownSnapshot(f"snapshot {snap_id!r} of {name!r} not found under {root} (latest: {known})")
    return snap_id


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: summary[key] for key in _SUMMARY_FIELDS if summary.get(key) is not None}


# ------------------------------------------------------------------------- writing, history


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, filename)).st_size
    return total


def _ensure_private_dir(path: Path, *, tighten: bool = True) -> None:
    """Create ``path`` 0700 (parents 0755 as usual); with ``tighten`` make an existing one 0700 too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not tighten:
            return
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _record_history(base: Path, action: str, **details: Any) -> None:
    record = {"time": utc_iso(), "action": action, "host": socket.gethostname(), "pid": os.getpid()}
    record.update({key: value for key, value in details.items() if value is not None})
    append_jsonl(base / HISTORY, record)
    with contextlib.suppress(OSError):
        os.chmod(base / HISTORY, 0o600)


def _lock(base: Path, action: str) -> FileLock:
    return FileLock(base / LOCK, f"config_snapshot {action}")


def _clean_stale_tmp(base: Path, max_age: float = 3600.0) -> None:
    now = time.time()
    for child in base.iterdir():
        if child.name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                if now - child.stat().st_mtime > max_age:
                    shutil.rmtree(child)


# --------------------------------------------------------------------------------------- take


@dataclass
class TakeResult:
    changed: bool
    snap_id: str
    path: str
    summary: dict[str, Any]
    previous_id: str | None
    changes: dict[str, list[str]]
    warnings: list[str]


def new_snapshot_id(created: float, digest: str) -> str:
    return time.strftime(_ID_TIME, time.gmtime(created)) + "-" + digest[:8]


def _summary(name: str, manifest: dict[str, Any], created: float, reason: str | None) -> dict[str, Any]:
    return {
        "id": new_snapshot_id(created, manifest["content_digest"]),
        "name": name,
        "created": utc_iso(created),
        "created_ts": created,
        "reason": reason,
        "host": socket.gethostname(),
        "content_digest": manifest["content_digest"],
        "files": sum(1 for e in manifest["entries"] if e["type"] in ("file", "symlink")),
        "dirs": sum(1 for e in manifest["entries"] if e["type"] == "dir"),
        "keys": len(manifest["keys"]),
        "paths": list(manifest["paths"]),
        "redis_keys": list(manifest["redis_patterns"]),
    }


def _restorable(base: Path, snap_id: str, warnings: list[str]) -> bool:
    try:  # equal content is only worth returning if that snapshot can be restored
        verify_snapshot(base / snap_id, load_manifest(base / snap_id))
    except CorruptSnapshot as exc:
        warnings.append(f"{exc}: taking a new snapshot")
        return False
    return True


def take_snapshot(
    root: str,
    name: str,
    paths: list[str],
    patterns: list[str],
    client=None,
    *,
    allowed_roots: list[str] | None = None,
    reason: str | None = None,
    check_mode: bool = False,
    limits: Limits | None = None,
) -> TakeResult:
    """Take a snapshot unless its content equals the latest one (then return that one).

    Everything is read and counted against ``limits`` before anything is written.
    """
    base = name_dir(root, name)
    if not paths and not patterns:
        raise SnapshotError("nothing to snapshot: give paths, redis_keys or both")
    if patterns and client is None:
        raise SnapshotError("redis_keys given but no Redis connection")
    limits = limits or Limits()
    scan = scan_paths(paths, root, allowed_roots, limits)
    key_states = {}
    if patterns:
        key_states = read_key_states(client, scan_keys(client, patterns), with_payload=True, limits=limits)
    manifest = build_manifest(name, paths, patterns, scan.roots, scan.entries, key_states)

    snapshots = list_snapshots(root, name)
    latest = snapshots[-1] if snapshots else None
    equal = latest is not None and latest.get("content_digest") == manifest["content_digest"]
    if equal and _restorable(base, latest["id"], scan.warnings):
        changes = compare(manifest, manifest)
        return TakeResult(False, latest["id"], str(base / latest["id"]), latest, latest["id"], changes, scan.warnings)
    previous_manifest = None
    if latest:
        with contextlib.suppress(SnapshotError):
            previous_manifest = load_manifest(base / latest["id"])
    changes = compare(previous_manifest, manifest)
    previous_id = latest["id"] if latest else None

    summary = _summary(name, manifest, time.time(), reason)
    if check_mode:
        summary["size"] = sum(e.get("size", 0) for e in manifest["entries"]) + sum(k["size"] for k in manifest["keys"])
        snap_id = summary["id"]
        return TakeResult(True, snap_id, str(base / snap_id), summary, previous_id, changes, scan.warnings)

    _ensure_private_dir(Path(root), tighten=False)  # an existing root is the user's to set up
    _ensure_private_dir(base)
    with _lock(base, "take"):
        _clean_stale_tmp(base)
        final = _write_snapshot(base, manifest, key_states, summary)
        _record_history(base, "taken", id=final.name, reason=reason, files=summary["files"], keys=summary["keys"])
    return TakeResult(True, final.name, str(final), summary, previous_id, changes, scan.warnings)


def _write_snapshot(
    base: Path, manifest: dict[str, Any], key_states: dict[bytes, dict[str, Any]], summary: dict[str, Any]
) -> Path:
    """Write the snapshot into a temporary directory and rename it into place; returns where it is."""
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=base))
    try:
        os.chmod(tmp, 0o700)
        _write_blobs(tmp, manifest, key_states)
        manifest.update(
            id=summary["id"], created=summary["created"], created_ts=summary["created_ts"], reason=summary["reason"]
        )
        manifest_bytes = canonical_json(manifest)  # no indent: keeps the C encoder (100k keys)
        _write_private(tmp / MANIFEST, manifest_bytes)
        _write_private(tmp / MANIFEST_SUM, f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n".encode())
        final = base / summary["id"]
        suffix = 1
        while final.exists():
            suffix += 1
            final = base / f"{summary['id']}-{suffix}"
        summary["id"] = final.name
        summary["size"] = _tree_size(tmp)
        _write_private(tmp / SUMMARY, json.dumps(summary, sort_keys=True, indent=1).encode())
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_blobs(tmp: Path, manifest: dict[str, Any], key_states: dict[bytes, dict[str, Any]]) -> None:
    """Write the file contents and key payloads: two files, two fsyncs, whatever the item count."""
    fd = os.open(tmp / FILES_BLOB, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        write_file_pack(out, manifest["entries"])
        out.flush()
        os.fsync(out.fileno())
    if manifest["keys"]:
        fd = os.open(tmp / KEYS_BLOB, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for entry in manifest["keys"]:
                out.write(key_states[key_from_json(entry)]["payload"])
            out.flush()
            os.fsync(out.fileno())


# ------------------------------------------------------------------------------------ restore


def plan_restore(
    root: str,
    name: str,
    snap_id: str | None,
    get_client: Callable[[], Any] | None = None,
    *,
    keep_new_files: bool = False,
    allowed_roots: list[str] | None = None,
    limits: Limits | None = None,
) -> RestorePlan:
    """Verify the snapshot completely, then work out what differs from it. Touches nothing."""
    snap_id = resolve_id(root, name, snap_id)
    snapdir = name_dir(root, name) / snap_id
    manifest = load_manifest(snapdir)
    plan = RestorePlan(snap_id=snap_id, snapdir=snapdir, payloads=verify_snapshot(snapdir, manifest))
    places = Places(root, allowed_roots)
    plan_files(plan, manifest, places, keep_new_files=keep_new_files, limits=limits)
    if manifest["redis_patterns"]:
        if get_client is None:
            raise SnapshotError(f"snapshot {snap_id} holds Redis keys: a Redis connection is needed to restore it")
        plan_keys(plan, manifest, get_client())
    return plan


def apply_restore(plan: RestorePlan, root: str, name: str, client=None) -> None:
    """Put files and keys back as in the (already verified) snapshot, files first.

    A restore that stops part-way raises RestoreInterrupted, whose ``done`` is exactly what was
    changed before it stopped, and records ``restore_interrupted`` in the history; running the
    restore again finishes the job.
    """
    base = name_dir(root, name)
    done = RestorePlan(snap_id=plan.snap_id, snapdir=plan.snapdir)
    with _lock(base, "restore"):
        try:
            _apply(plan, client, done)
        except RestoreInterrupted as exc:
            _record_history(base, "restore_interrupted", id=plan.snap_id, error=str(exc), **done.counts())
            raise
        _record_history(base, "restored", id=plan.snap_id, **plan.counts())


def _apply(plan: RestorePlan, client, done: RestorePlan) -> None:
    try:
        apply_files(plan, done)
    except (OSError, SnapshotError) as exc:
        where = done.current or getattr(exc, "filename", None)
        reason = getattr(exc, "strerror", None) or str(exc)
        what = "the remaining files and the Redis keys" if plan.keys_changed else "the rest"
        raise RestoreInterrupted(
            f"restore of snapshot {plan.snap_id} stopped{f' at {where}' if where else ''}: {reason}; "
            f"{_count(done)} item(s) were restored before that (see restored), {what} were not restored. "
            "Fix the cause and run again: the restore finishes what is left",
            done.outline(),
        ) from None
    if not plan.keys_changed:
        return
    files = "the files were restored but " if plan.files_changed else ""
    try:
        apply_keys(plan, client, done)
    except KeysPartlyRestored as exc:
        raise RestoreInterrupted(
            f"{files}the Redis keys of snapshot {plan.snap_id} were restored only in part: {exc}. "
            "restored lists the keys Redis applied; fix the cause and run again",
            done.outline(),
        ) from None
    except RedisFailed as exc:
        raise RestoreInterrupted(
            f"{files}the Redis keys of snapshot {plan.snap_id} were not restored: {exc}", done.outline()
        ) from None


def _count(done: RestorePlan) -> int:
    return sum(done.counts().values())


# ------------------------------------------------------------------------------ delete / prune


def delete_snapshots(root: str, name: str, snap_ids: list[str], *, check_mode: bool = False) -> list[str]:
    """Delete the given snapshots (renamed away first so that none is ever half listed)."""
    base = name_dir(root, name)
    existing = {item["id"] for item in list_snapshots(root, name)}
    doomed = [snap_id for snap_id in snap_ids if snap_id in existing]
    if check_mode or not doomed:
        return doomed
    with _lock(base, "delete"):
        for snap_id in doomed:
            trash = base / f"{TMP_PREFIX}deleting-{snap_id}"
            os.rename(base / snap_id, trash)
            shutil.rmtree(trash)
        fsync_dir(base)
        _record_history(base, "deleted", ids=doomed)
    return doomed


def prune_ids(root: str, name: str, keep: int, *, extra: list[str] | None = None) -> list[str]:
    """The oldest snapshots beyond the newest ``keep``.

    ``extra`` are ids not on disk yet that count as the newest (the snapshot a check mode run would take).
    """
    if keep < 1:
        raise SnapshotError(f"keep must be at least 1, got {keep}")
    ids = [item["id"] for item in list_snapshots(root, name)] + list(extra or [])
    return ids[:-keep] if len(ids) > keep else []
