# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified snapshots of config files and Redis keys, restored as one unit.

Layout on the host::

    <root>/<name>/<id>/manifest.json          every item with its sha256 (and the content digest)
    <root>/<name>/<id>/manifest.json.sha256   checksum of the manifest itself
    <root>/<name>/<id>/summary.json           id, created, reason, size, counts (for listing only)
    <root>/<name>/<id>/files.bin              file contents back to back (each distinct content once)
    <root>/<name>/<id>/keys.bin               DUMP payloads of the keys, back to back
    <root>/<name>/history.jsonl               taken / restored / deleted, who and when

A snapshot is written into ``<root>/<name>/.tmp-*`` and renamed into place, so a half-written
snapshot is never listed. Directories are 0700 and files 0600: snapshots may hold secrets.

Two digests, for two jobs:

- ``sha256`` of every blob and of the manifest: integrity, checked in full before a restore.
- ``value_digest`` of every key: a canonical digest of its value (sorted members for sets and
  hashes) because DUMP of a hash-table encoded set or hash is not stable across DUMP/RESTORE;
  used to tell whether a key is already as in the snapshot. The ``content_digest`` of the
  snapshot is built from file checksums and metadata and these value digests (TTL presence, not
  the decaying TTL value), so taking a snapshot of unchanged content is recognised.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import errno
import glob
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.events import EVENTS_STREAM
from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import (
    FileLock,
    LockHeld,
    append_jsonl,
    atomic_symlink,
    atomic_write,
    fsync_dir,
)

try:
    from redis import RedisError
except ImportError:  # pragma: no cover - the module reports the missing library when it connects
    RedisError = OSError

from ansible_collections.queueops.rollback.plugins.module_utils.identity import InvalidName, validate_name

__all__ = ["LockHeld", "RedisError"]

FORMAT_VERSION = 1
_UTC = datetime.timezone.utc
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
SUMMARY = "summary.json"
KEYS_BLOB = "keys.bin"
FILES_BLOB = "files.bin"
HISTORY = "history.jsonl"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
SCAN_COUNT = 1000
BATCH = 1000
DIFF_MAX_BYTES = 256 * 1024
_GLOB_CHARS = set("*?[")


class SnapshotError(Exception):
    """Anything a user must be told about; the message says what and where."""


class CorruptSnapshot(SnapshotError):
    """A snapshot that fails verification; nothing was changed."""


class UnknownSnapshot(SnapshotError):
    """No snapshot with that id (or none at all) under the name."""


class PathNotAllowed(SnapshotError):
    """A path outside ``allowed_roots``."""


class RestoreInterrupted(SnapshotError):
    """A restore that stopped part-way; ``done`` is the outline of what it changed before that."""

    def __init__(self, message: str, done: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.done = done


# --------------------------------------------------------------------------------------- helpers


def _sha256_file(path: str | os.PathLike) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_to_json(name: bytes) -> dict[str, str]:
    """Key names are bytes; JSON holds text, so names that are not UTF-8 go as base64."""
    try:
        return {"name": name.decode("utf-8")}
    except UnicodeDecodeError:
        return {"name_b64": base64.b64encode(name).decode()}


def key_from_json(entry: dict[str, Any]) -> bytes:
    if "name_b64" in entry:
        return base64.b64decode(entry["name_b64"])
    return entry["name"].encode("utf-8")


def key_label(name: bytes) -> str:
    return name.decode("utf-8", errors="backslashreplace")


def validate_snapshot_name(value: str, what: str = "name") -> str:
    try:
        return validate_name(value, what)
    except InvalidName as exc:
        raise SnapshotError(str(exc)) from None


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolved(path: str) -> str:
    """The real location of ``path`` without following ``path`` itself if it is a symlink."""
    parent, base = os.path.split(os.path.normpath(path))
    return os.path.join(os.path.realpath(parent or "/"), base) if base else os.path.realpath(parent)


def check_allowed(path: str, allowed_roots: list[str] | None) -> None:
    if not allowed_roots:
        return
    real = _resolved(path)
    for root in allowed_roots:
        if _is_within(real, os.path.realpath(root)):
            return
    raise PathNotAllowed(f"path {path} is outside allowed_roots ({', '.join(allowed_roots)})")


# ------------------------------------------------------------------------------------ file side


def _stat_entry(path: str, st: os.stat_result) -> dict[str, Any]:
    return {"path": path, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


@dataclass
class FileScan:
    roots: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _add_path(scan: FileScan, path: str, root: str, store_root: str, allowed_roots: list[str] | None) -> None:
    """Record ``path`` (recursively when it is a directory) under the snapshotted ``root``."""
    if _is_within(_resolved(path), store_root):
        return
    check_allowed(path, allowed_roots)
    st = os.lstat(path)
    entry = _stat_entry(path, st)
    entry["relative"] = os.path.relpath(path, os.path.dirname(root)) if path != root else os.path.basename(root)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        entry.update(type="symlink", target=target, sha256=hashlib.sha256(os.fsencode(target)).hexdigest())
    elif stat.S_ISREG(st.st_mode):
        sha, size = _sha256_file(path)
        entry.update(type="file", sha256=sha, size=size)
    elif stat.S_ISDIR(st.st_mode):
        entry["type"] = "dir"
        scan.entries[path] = entry
        for child in sorted(os.listdir(path)):
            _add_path(scan, os.path.join(path, child), root, store_root, allowed_roots)
        return
    else:
        # A fifo, socket or device: not copied, but recorded so that a restore leaves it alone.
        entry["type"] = "special"
        scan.warnings.append(
            f"{path} is neither a file, a directory nor a symlink: not snapshotted (a restore leaves it as it is)"
        )
    scan.entries[path] = entry


def _glob(pattern: str) -> list[str]:
    """Matches of ``pattern``; with ``**``, none reached through a symlinked directory.

    Python's recursive glob follows symlinks to directories (and loops through them); a snapshot
    keeps symlinks as links, as it does when it walks a directory.
    """
    matches = glob.glob(pattern, recursive=True)
    if "**" not in pattern:
        return matches
    prefix = pattern.split("*")[0].split("?")[0].split("[")[0]
    prefix = prefix if prefix.endswith("/") else os.path.dirname(prefix) + "/"
    kept = []
    for match in matches:
        parts = os.path.normpath(match)[len(prefix) :].split("/")[:-1]
        ancestors = (prefix + "/".join(parts[: index + 1]) for index in range(len(parts)))
        if not any(os.path.islink(ancestor) for ancestor in ancestors):
            kept.append(match)
    return kept


def scan_paths(paths: list[str], store_root: str, allowed_roots: list[str] | None = None) -> FileScan:
    """Expand files, directories and globs into manifest entries (no content copied yet)."""
    scan = FileScan()
    store_root = os.path.realpath(store_root)
    for raw in paths:
        if not os.path.isabs(raw):
            raise SnapshotError(f"path {raw!r} must be absolute")
        path = os.path.normpath(raw)
        if _GLOB_CHARS & set(path):
            check_allowed(path.split("*")[0].split("?")[0].split("[")[0] or "/", allowed_roots)
            scan.roots.append({"path": path, "kind": "glob"})
            for match in sorted(_glob(path)):
                _add_path(scan, os.path.normpath(match), os.path.normpath(match), store_root, allowed_roots)
            continue
        check_allowed(path, allowed_roots)
        if _is_within(_resolved(path), store_root):
            raise SnapshotError(f"path {path} is inside the snapshot root {store_root}")
        if not os.path.lexists(path):
            scan.roots.append({"path": path, "kind": "absent"})
            scan.entries[path] = {"path": path, "type": "absent", "relative": os.path.basename(path)}
            scan.warnings.append(f"{path} does not exist: recorded as absent (a restore removes it)")
            continue
        kind = "dir" if os.path.isdir(path) and not os.path.islink(path) else "file"
        if os.path.islink(path) and os.path.isdir(path):
            scan.warnings.append(
                f"{path} is a symlink to a directory: only the link is snapshotted, not the files in it; "
                f"give the directory it points to ({os.path.realpath(path)}) to snapshot them"
            )
        scan.roots.append({"path": path, "kind": kind})
        _add_path(scan, path, path, store_root, allowed_roots)
    return scan


# ------------------------------------------------------------------------------------ key side


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
    for pattern in patterns:
        for name in client.scan_iter(match=pattern, count=SCAN_COUNT):
            names.add(name)
    names.discard(EVENTS_STREAM.encode())
    return sorted(names)


def _types(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_key_states(client, names: list[bytes], *, with_payload: bool) -> dict[bytes, dict[str, Any]]:
    """Type, PTTL, value digest (and DUMP payload) of keys, pipelined in batches.

    Keys that vanish between the reads are left out.
    """
    states: dict[bytes, dict[str, Any]] = {}
    for start in range(0, len(names), BATCH):
        batch = names[start : start + BATCH]
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
            kind = _types(replies[index * step])
            if kind == "none":
                continue
            state = {"type": kind, "ttl_ms": int(replies[index * step + 1])}
            if with_payload:
                payload = replies[index * step + 2]
                if payload is None:
                    continue
                state["payload"] = payload
            states[name] = state
            present.append(name)
        pipe = client.pipeline(transaction=False)
        for name in present:
            _queue_value_read(pipe, name, states[name]["type"])
        for name, value in zip(present, pipe.execute()):
            digest = _value_digest(states[name]["type"], value)
            if digest is None:
                del states[name]
            else:
                states[name]["value_digest"] = digest
    return states


# ------------------------------------------------------------------------------- store & listing


def name_dir(root: str, name: str) -> Path:
    return Path(root) / validate_snapshot_name(name)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _summary_of(snapdir: Path) -> dict[str, Any]:
    try:
        summary = _read_json(snapdir / SUMMARY)
        if not isinstance(summary, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        created = _created_from_id(snapdir.name)
        return {
            "id": snapdir.name,
            "created": _utc(created) if created else None,
            "created_ts": created or 0.0,
            "error": f"summary unreadable: {exc}",
        }
    summary["id"] = snapdir.name
    return summary


def _created_from_id(snap_id: str) -> float | None:
    try:
        stamp = datetime.datetime.strptime(snap_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=_UTC)
    except ValueError:
        return None
    return stamp.timestamp()


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
    record = {"time": _utc(time.time()), "action": action, "host": socket.gethostname(), "pid": os.getpid()}
    record.update({key: value for key, value in details.items() if value is not None})
    append_jsonl(base / HISTORY, record)
    with contextlib.suppress(OSError):
        os.chmod(base / HISTORY, 0o600)


def _lock(base: Path, action: str) -> FileLock:
    lock = FileLock(base / LOCK, f"config_snapshot {action}")
    return lock


def _clean_stale_tmp(base: Path, max_age: float = 3600.0) -> None:
    now = time.time()
    for child in base.iterdir():
        if child.name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                if now - child.stat().st_mtime > max_age:
                    shutil.rmtree(child)


# -------------------------------------------------------------------------------------- take


@dataclass
class TakeResult:
    changed: bool
    snap_id: str | None
    path: str | None
    summary: dict[str, Any]
    previous_id: str | None
    changes: dict[str, list[str]]
    warnings: list[str]


def content_digest(manifest: dict[str, Any]) -> str:
    """What a snapshot holds, independent of when it was taken and of decaying TTL values."""
    files = [
        {k: entry.get(k) for k in ("path", "type", "mode", "uid", "gid", "sha256", "size", "target")}
        for entry in manifest["entries"]
    ]
    keys = [
        {**{k: entry.get(k) for k in ("name", "name_b64", "type", "value_digest")}, "ttl": entry["ttl_ms"] > 0}
        for entry in manifest["keys"]
    ]
    spec = {"paths": manifest["paths"], "redis_keys": manifest["redis_patterns"], "roots": manifest["roots"]}
    return hashlib.sha256(_canonical_json({"spec": spec, "files": files, "keys": keys})).hexdigest()


def _build_manifest(
    name: str, paths: list[str], patterns: list[str], scan: FileScan, key_states: dict[bytes, dict[str, Any]]
) -> dict[str, Any]:
    keys = []
    offset = 0
    for key_name in sorted(key_states):
        state = key_states[key_name]
        payload = state["payload"]
        keys.append(
            {
                **key_to_json(key_name),
                "type": state["type"],
                "ttl_ms": state["ttl_ms"] if state["ttl_ms"] > 0 else 0,
                "sha256": hashlib.sha256(payload).hexdigest(),
                "size": len(payload),
                "offset": offset,
                "value_digest": state["value_digest"],
            }
        )
        offset += len(payload)
    file_offsets: dict[str, int] = {}
    entries = [scan.entries[path] for path in sorted(scan.entries)]
    pack_size = 0
    for entry in entries:
        if entry["type"] == "file":
            if entry["sha256"] not in file_offsets:
                file_offsets[entry["sha256"]] = pack_size
                pack_size += entry["size"]
            entry["offset"] = file_offsets[entry["sha256"]]
    manifest = {
        "format": FORMAT_VERSION,
        "name": name,
        "paths": list(paths),
        "redis_patterns": list(patterns),
        "roots": scan.roots,
        "entries": entries,
        "files_size": pack_size,
        "keys": keys,
    }
    manifest["content_digest"] = content_digest(manifest)
    return manifest


def _compare(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, list[str]]:
    """Names of files and keys added, changed and removed between two manifests."""

    def by_file(manifest):
        return {e["path"]: e for e in manifest["entries"] if e["type"] != "absent"} if manifest else {}

    def by_key(manifest):
        return {key_label(key_from_json(e)): e for e in manifest["keys"]} if manifest else {}

    changes: dict[str, list[str]] = {}
    for label, old_items, new_items, fields in (
        ("files", by_file(old), by_file(new), ("type", "sha256", "mode", "uid", "gid", "target")),
        ("keys", by_key(old), by_key(new), ("type", "value_digest")),
    ):
        changes[f"{label}_added"] = sorted(set(new_items) - set(old_items))
        changes[f"{label}_removed"] = sorted(set(old_items) - set(new_items))
        changes[f"{label}_changed"] = sorted(
            item
            for item in set(new_items) & set(old_items)
            if any(new_items[item].get(f) != old_items[item].get(f) for f in fields)
        )
    return changes


def new_snapshot_id(created: float, digest: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created)) + "-" + digest[:8]


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
) -> TakeResult:
    """Take a snapshot unless its content equals the latest one (then return that one)."""
    base = name_dir(root, name)
    if not paths and not patterns:
        raise SnapshotError("nothing to snapshot: give paths, redis_keys or both")
    if patterns and client is None:
        raise SnapshotError("redis_keys given but no Redis connection")
    scan = scan_paths(paths, root, allowed_roots)
    key_states = read_key_states(client, scan_keys(client, patterns), with_payload=True) if patterns else {}
    manifest = _build_manifest(name, paths, patterns, scan, key_states)

    snapshots = list_snapshots(root, name)
    latest = snapshots[-1] if snapshots else None
    if latest and latest.get("content_digest") == manifest["content_digest"]:
        try:  # equal content is only worth returning if that snapshot can be restored
            verify_snapshot(base / latest["id"], load_manifest(base / latest["id"]))
        except CorruptSnapshot as exc:
            scan.warnings.append(f"{exc}: taking a new snapshot")
        else:
            changes = _compare(manifest, manifest)
            return TakeResult(
                False, latest["id"], str(base / latest["id"]), latest, latest["id"], changes, scan.warnings
            )
    previous_manifest = None
    if latest:
        with contextlib.suppress(SnapshotError):
            previous_manifest = load_manifest(base / latest["id"])
    changes = _compare(previous_manifest, manifest)

    created = time.time()
    snap_id = new_snapshot_id(created, manifest["content_digest"])
    summary = {
        "id": snap_id,
        "name": name,
        "created": _utc(created),
        "created_ts": created,
        "reason": reason,
        "host": socket.gethostname(),
        "content_digest": manifest["content_digest"],
        "files": sum(1 for e in manifest["entries"] if e["type"] in ("file", "symlink")),
        "dirs": sum(1 for e in manifest["entries"] if e["type"] == "dir"),
        "keys": len(manifest["keys"]),
        "paths": list(paths),
        "redis_keys": list(patterns),
    }
    if check_mode:
        summary["size"] = sum(e.get("size", 0) for e in manifest["entries"]) + sum(k["size"] for k in manifest["keys"])
        return TakeResult(True, snap_id, str(base / snap_id), summary, latest and latest["id"], changes, scan.warnings)

    _ensure_private_dir(Path(root), tighten=False)  # an existing root is the user's to set up
    _ensure_private_dir(base)
    with _lock(base, "take"):
        _clean_stale_tmp(base)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=base))
        try:
            os.chmod(tmp, 0o700)
            _write_snapshot_content(tmp, manifest, scan, key_states)
            manifest.update(id=snap_id, created=summary["created"], created_ts=created, reason=reason)
            manifest_bytes = _canonical_json(manifest)  # no indent: keeps the C encoder (100k keys)
            _write_private(tmp / MANIFEST, manifest_bytes)
            _write_private(tmp / MANIFEST_SUM, f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n".encode())
            summary["size"] = _tree_size(tmp)
            _write_private(tmp / SUMMARY, json.dumps(summary, sort_keys=True, indent=1).encode())
            fsync_dir(tmp)
            final = base / snap_id
            suffix = 1
            while final.exists():
                suffix += 1
                final = base / f"{snap_id}-{suffix}"
            os.rename(tmp, final)
            fsync_dir(base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        summary["id"] = final.name
        if final.name != snap_id:
            _rewrite_summary_id(final, final.name)
        _record_history(base, "taken", id=final.name, reason=reason, files=summary["files"], keys=summary["keys"])
    return TakeResult(True, final.name, str(final), summary, latest and latest["id"], changes, scan.warnings)


def _rewrite_summary_id(snapdir: Path, snap_id: str) -> None:
    summary = _read_json(snapdir / SUMMARY)
    summary["id"] = snap_id
    os.unlink(snapdir / SUMMARY)
    _write_private(snapdir / SUMMARY, json.dumps(summary, sort_keys=True, indent=1).encode())


def _write_snapshot_content(
    tmp: Path, manifest: dict[str, Any], scan: FileScan, key_states: dict[bytes, dict[str, Any]]
) -> None:
    """Write the file contents and key payloads: two files, two fsyncs, whatever the item count."""
    written: set[str] = set()
    fd = os.open(tmp / FILES_BLOB, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for entry in manifest["entries"]:
            if entry["type"] != "file" or entry["sha256"] in written:
                continue
            if out.tell() != entry["offset"]:
                raise SnapshotError(f"internal error: {FILES_BLOB} offset of {entry['path']} is wrong")
            digest = hashlib.sha256()
            with open(entry["path"], "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise SnapshotError(f"{entry['path']} changed while the snapshot was taken; run again")
            written.add(entry["sha256"])
        out.flush()
        os.fsync(out.fileno())
    if manifest["keys"]:
        fd = os.open(tmp / KEYS_BLOB, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for entry in manifest["keys"]:
                out.write(key_states[key_from_json(entry)]["payload"])
            out.flush()
            os.fsync(out.fileno())


def read_file_copy(snapdir: Path, entry: dict[str, Any]) -> bytes:
    with open(snapdir / FILES_BLOB, "rb") as pack:
        pack.seek(entry["offset"])
        return pack.read(entry["size"])


# ------------------------------------------------------------------------------------ verify


def load_manifest(snapdir: Path) -> dict[str, Any]:
    """The manifest, checked against its own checksum; CorruptSnapshot when it cannot be trusted."""
    label = f"snapshot {snapdir.parent.name}/{snapdir.name}"
    try:
        raw = (snapdir / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise CorruptSnapshot(f"{label} is corrupt: {MANIFEST} is missing") from None
    except OSError as exc:
        raise CorruptSnapshot(f"{label} is corrupt: cannot read {MANIFEST}: {exc}") from None
    try:
        expected = (snapdir / MANIFEST_SUM).read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        raise CorruptSnapshot(f"{label} is corrupt: {MANIFEST_SUM} is missing or unreadable") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise CorruptSnapshot(f"{label} is corrupt: {MANIFEST} has sha256 {actual}, expected {expected}")
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown format {manifest.get('format')!r}")
        if content_digest(manifest) != manifest["content_digest"]:
            raise ValueError("content digest does not match its items")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptSnapshot(f"{label} is corrupt: {MANIFEST} cannot be parsed: {exc}") from None
    return manifest


def _verify_files(label: str, snapdir: Path, manifest: dict[str, Any]) -> None:
    files = [entry for entry in manifest["entries"] if entry["type"] == "file"]
    try:
        pack = open(snapdir / FILES_BLOB, "rb")  # noqa: SIM115 - closed below
    except OSError:
        raise CorruptSnapshot(f"{label} is corrupt: {FILES_BLOB} (the file contents) is missing") from None
    with pack:
        actual_size = os.fstat(pack.fileno()).st_size
        checked: set[str] = set()
        for entry in files:
            if entry["sha256"] in checked:
                continue
            if entry["offset"] + entry["size"] > actual_size:
                raise CorruptSnapshot(
                    f"{label} is corrupt: the copy of {entry['path']} is truncated "
                    f"({FILES_BLOB} has {actual_size} bytes, expected {manifest['files_size']})"
                )
            pack.seek(entry["offset"])
            sha = hashlib.sha256(pack.read(entry["size"])).hexdigest()
            if sha != entry["sha256"]:
                raise CorruptSnapshot(
                    f"{label} is corrupt: the copy of {entry['path']} has sha256 {sha}, expected {entry['sha256']}"
                )
            checked.add(entry["sha256"])
        if actual_size != manifest["files_size"]:
            raise CorruptSnapshot(
                f"{label} is corrupt: {FILES_BLOB} has {actual_size} bytes, expected {manifest['files_size']}"
            )


def verify_snapshot(snapdir: Path, manifest: dict[str, Any]) -> bytes:
    """Check every blob's size and sha256; return the key payloads blob. Raises CorruptSnapshot."""
    label = f"snapshot {snapdir.parent.name}/{snapdir.name}"
    _verify_files(label, snapdir, manifest)
    keys = manifest["keys"]
    if not keys:
        return b""
    try:
        payloads = (snapdir / KEYS_BLOB).read_bytes()
    except OSError:
        raise CorruptSnapshot(f"{label} is corrupt: {KEYS_BLOB} (the Redis keys) is missing") from None
    expected_size = sum(entry["size"] for entry in keys)
    if len(payloads) != expected_size:
        raise CorruptSnapshot(f"{label} is corrupt: {KEYS_BLOB} has {len(payloads)} bytes, expected {expected_size}")
    for entry in keys:
        payload = payloads[entry["offset"] : entry["offset"] + entry["size"]]
        if hashlib.sha256(payload).hexdigest() != entry["sha256"]:
            raise CorruptSnapshot(
                f"{label} is corrupt: the DUMP of key {key_label(key_from_json(entry))} does not match its sha256"
            )
    return payloads


# ----------------------------------------------------------------------------------- restore


@dataclass
class RestorePlan:
    snap_id: str
    snapdir: Path
    mkdirs: list[dict[str, Any]] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)  # content differs or missing
    metadata: list[dict[str, Any]] = field(default_factory=list)  # only mode / owner differ
    links: list[dict[str, Any]] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)
    key_restores: list[tuple[bytes, dict[str, Any], str]] = field(default_factory=list)  # name, entry, why
    key_deletes: list[bytes] = field(default_factory=list)
    payloads: bytes = b""
    needs_redis: bool = False
    current: str | None = None  # while applying: the path being worked on

    @property
    def changed(self) -> bool:
        return any(
            (self.mkdirs, self.writes, self.metadata, self.links, self.removals, self.key_restores, self.key_deletes)
        )

    def outline(self) -> dict[str, list[str]]:
        return {
            "dirs_created": [e["path"] for e in self.mkdirs],
            "files_restored": [e["path"] for e in self.writes] + [e["path"] for e in self.links],
            "files_metadata_fixed": [e["path"] for e in self.metadata],
            "files_removed": list(self.removals),
            "keys_restored": [key_label(name) for name, _entry, _why in self.key_restores],
            "keys_deleted": [key_label(name) for name in self.key_deletes],
        }


def _current_tree(path: str) -> list[str]:
    """Everything under a directory (deepest first for removal), without following symlinks."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        found.extend(os.path.join(dirpath, f) for f in filenames)
        for dirname in dirnames:
            full = os.path.join(dirpath, dirname)
            found.append(full)
    return found


def _scope_paths(manifest: dict[str, Any], store_root: str) -> list[str]:
    """Paths that exist now inside what the snapshot covered (snapshotted directories, globs)."""
    current: list[str] = []
    for root in manifest["roots"]:
        if root["kind"] == "dir" and os.path.isdir(root["path"]) and not os.path.islink(root["path"]):
            current.extend(_current_tree(root["path"]))
        elif root["kind"] == "glob":
            for match in _glob(root["path"]):
                match = os.path.normpath(match)
                if os.path.isdir(match) and not os.path.islink(match):
                    current.extend(_current_tree(match))
                current.append(match)
        elif root["kind"] == "absent" and os.path.lexists(root["path"]):
            if os.path.isdir(root["path"]) and not os.path.islink(root["path"]):
                current.extend(_current_tree(root["path"]))
            current.append(root["path"])
    real_store = os.path.realpath(store_root)
    return [p for p in dict.fromkeys(current) if not _is_within(_resolved(p), real_store)]


def plan_restore(
    root: str,
    name: str,
    snap_id: str | None,
    get_client: Callable[[], Any] | None = None,
    *,
    keep_new_files: bool = False,
    allowed_roots: list[str] | None = None,
) -> RestorePlan:
    """Verify the snapshot completely, then work out what differs from it. Touches nothing."""
    snap_id = resolve_id(root, name, snap_id)
    snapdir = name_dir(root, name) / snap_id
    manifest = load_manifest(snapdir)
    payloads = verify_snapshot(snapdir, manifest)
    plan = RestorePlan(snap_id=snap_id, snapdir=snapdir, payloads=payloads)
    plan.needs_redis = bool(manifest["redis_patterns"])
    for entry in manifest["entries"]:
        check_allowed(entry["path"], allowed_roots)

    known = {e["path"] for e in manifest["entries"] if e["type"] != "absent"}
    for entry in manifest["entries"]:
        _plan_entry(plan, entry)
    if not keep_new_files:
        plan.removals = [p for p in _scope_paths(manifest, root) if p not in known]

    if plan.needs_redis:
        if get_client is None:
            raise SnapshotError(f"snapshot {snap_id} holds Redis keys: a Redis connection is needed to restore it")
        _plan_keys(plan, manifest, get_client())
    return plan


def _plan_entry(plan: RestorePlan, entry: dict[str, Any]) -> None:
    path = entry["path"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    kind = entry["type"]
    if kind in ("absent", "special"):
        return  # absent: handled with removals (scope); special (fifo, socket, device): left as it is
    if st is not None and kind != "dir" and stat.S_ISDIR(st.st_mode):
        raise SnapshotError(f"{path} is a directory now but a {kind} in snapshot {plan.snap_id}: remove it first")
    if kind == "dir":
        if st is None:
            plan.mkdirs.append(entry)
        elif not stat.S_ISDIR(st.st_mode):
            raise SnapshotError(f"{path} is not a directory now but one in snapshot {plan.snap_id}: remove it first")
        elif _meta_differs(entry, st):
            plan.metadata.append({**entry, "before": _stat_entry(path, st)})
        return
    if kind == "symlink":
        if st is None or not stat.S_ISLNK(st.st_mode) or os.readlink(path) != entry["target"]:
            plan.links.append(entry)
        elif (st.st_uid, st.st_gid) != (entry["uid"], entry["gid"]):
            plan.metadata.append({**entry, "before": _stat_entry(path, st)})
        return
    if st is None or not stat.S_ISREG(st.st_mode) or _sha256_file(path)[0] != entry["sha256"]:
        plan.writes.append(entry)
    elif _meta_differs(entry, st):
        plan.metadata.append({**entry, "before": _stat_entry(path, st)})


def _meta_differs(entry: dict[str, Any], st: os.stat_result) -> bool:
    return (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (entry["mode"], entry["uid"], entry["gid"])


def _plan_keys(plan: RestorePlan, manifest: dict[str, Any], client) -> None:
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


def apply_restore(plan: RestorePlan, root: str, name: str, client=None) -> None:
    """Put files and keys back as in the (already verified) snapshot.

    If a file operation fails, RestoreInterrupted says where, what was changed before (``done``)
    and that the Redis keys were not touched; running the restore again finishes the job.
    """
    base = name_dir(root, name)
    with _lock(base, "restore"):
        done = RestorePlan(snap_id=plan.snap_id, snapdir=plan.snapdir)
        try:
            _apply_files(plan, done)
        except OSError as exc:
            what = "the remaining files and the Redis keys" if plan.key_restores or plan.key_deletes else "the rest"
            count = sum(len(v) for v in done.outline().values())
            raise RestoreInterrupted(
                f"restore of snapshot {plan.snap_id} stopped at {done.current or exc.filename}: "
                f"{exc.strerror or exc}; {count} item(s) were restored before that (see restored), "
                f"{what} were not restored. Fix the cause and run again: the restore finishes what is left",
                done.outline(),
            ) from None
        if plan.key_restores or plan.key_deletes:
            try:
                _apply_keys(plan, client)
            except RedisError as exc:
                files_done = bool(plan.mkdirs or plan.writes or plan.metadata or plan.links or plan.removals)
                prefix = "the files were restored but " if files_done else ""
                raise RestoreInterrupted(
                    f"{prefix}the Redis keys of snapshot {plan.snap_id} were not (the transaction did not run): {exc}",
                    done.outline(),
                ) from None
        _record_history(base, "restored", id=plan.snap_id, **{k: len(v) for k, v in plan.outline().items()})


def _apply_files(plan: RestorePlan, done: RestorePlan) -> None:
    """The file side of a restore; ``done`` collects each step once it is complete."""
    for entry in sorted(plan.mkdirs, key=lambda e: e["path"]):
        done.current = entry["path"]
        os.makedirs(os.path.dirname(entry["path"]), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(entry["path"], entry["mode"])
        os.chown(entry["path"], entry["uid"], entry["gid"])
        os.chmod(entry["path"], entry["mode"])
        done.mkdirs.append(entry)
    for entry in plan.writes:
        done.current = entry["path"]
        data = read_file_copy(plan.snapdir, entry)
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:  # changed since verification
            raise CorruptSnapshot(f"the copy of {entry['path']} changed during the restore")
        os.makedirs(os.path.dirname(entry["path"]), exist_ok=True)
        atomic_write(entry["path"], data, mode=entry["mode"], uid=entry["uid"], gid=entry["gid"])
        if entry["mode"] & 0o6000:  # chown clears setuid/setgid: set them again
            os.chmod(entry["path"], entry["mode"])
        done.writes.append(entry)
    for entry in plan.links:
        done.current = entry["path"]
        os.makedirs(os.path.dirname(entry["path"]), exist_ok=True)
        atomic_symlink(entry["path"], entry["target"])
        os.lchown(entry["path"], entry["uid"], entry["gid"])
        done.links.append(entry)
    for entry in plan.metadata:
        done.current = entry["path"]
        os.lchown(entry["path"], entry["uid"], entry["gid"])
        if entry["type"] != "symlink":
            os.chmod(entry["path"], entry["mode"])
        done.metadata.append(entry)
    for path in plan.removals:  # deepest first
        done.current = path
        _remove(path)
        done.removals.append(path)
    done.current = None


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise


def _apply_keys(plan: RestorePlan, client) -> None:
    pipe = client.pipeline(transaction=True)
    for key_name, entry, _why in plan.key_restores:
        payload = plan.payloads[entry["offset"] : entry["offset"] + entry["size"]]
        pipe.restore(key_name, entry["ttl_ms"], payload, replace=True)
    for start in range(0, len(plan.key_deletes), BATCH):
        pipe.delete(*plan.key_deletes[start : start + BATCH])
    results = pipe.execute(raise_on_error=False)
    errors = [str(result) for result in results if isinstance(result, Exception)]
    if errors:
        raise SnapshotError(f"Redis refused part of the restore transaction ({len(errors)} errors): {errors[0]}")


# ------------------------------------------------------------------------------------- diffs


def _text_or_none(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _read_limited(path: str) -> bytes | None:
    try:
        if os.path.getsize(path) > DIFF_MAX_BYTES:
            return None
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _mode_owner(meta: dict[str, Any]) -> str:
    return f"mode {meta['mode']:04o} owner {meta['uid']}:{meta['gid']}"


def restore_diff(plan: RestorePlan) -> list[dict[str, Any]]:
    """Ansible diff entries: unified diffs of text files, one line for binary files, key changes."""
    diffs: list[dict[str, Any]] = []
    for entry in plan.writes:
        path = entry["path"]
        header = {"before_header": path, "after_header": f"{path} (snapshot {plan.snap_id})"}
        exists = os.path.isfile(path) and not os.path.islink(path)
        before = _read_limited(path) if exists else b""
        after = read_file_copy(plan.snapdir, entry) if entry["size"] <= DIFF_MAX_BYTES else None
        if before is None or after is None:
            diffs.append({**header, "prepared": f"{path}: too large to show (restored from snapshot)\n"})
            continue
        before_text, after_text = _text_or_none(before), _text_or_none(after)
        if before_text is None or after_text is None:
            diffs.append({**header, "prepared": f"Binary file {path} differs ({len(before)} -> {len(after)} bytes)\n"})
        else:
            diffs.append({**header, "before": before_text, "after": after_text})
    for entry in plan.mkdirs:
        diffs.append({"prepared": f"create directory {entry['path']} ({_mode_owner(entry)})\n"})
    for entry in plan.links:
        diffs.append({"prepared": f"symlink {entry['path']} -> {entry['target']}\n"})
    for entry in plan.metadata:
        diffs.append({"prepared": f"{entry['path']}: {_mode_owner(entry['before'])} -> {_mode_owner(entry)}\n"})
    if plan.removals:
        lines = "".join(f"  {path}\n" for path in plan.removals)
        diffs.append({"prepared": f"remove (did not exist at snapshot time):\n{lines}"})
    if plan.key_restores or plan.key_deletes:
        diffs.append({"prepared": _key_changes_text(plan)})
    return diffs


def _key_changes_text(plan: RestorePlan) -> str:
    groups = {"added": [], "changed": [], "removed": []}
    for key_name, _entry, why in plan.key_restores:
        groups["added" if why == "missing" else "changed"].append(key_label(key_name))
    groups["removed"] = [key_label(name) for name in plan.key_deletes]
    lines = [f"Redis keys (snapshot {plan.snap_id}):"]
    for label, title in (
        ("added", "restored (missing now)"),
        ("changed", "restored (changed)"),
        ("removed", "deleted (not in snapshot)"),
    ):
        for key in groups[label]:
            lines.append(f"  {title}: {key}")
    return "\n".join(lines) + "\n"


def take_diff(previous_id: str | None, changes: dict[str, list[str]]) -> list[dict[str, Any]]:
    lines = [f"changes since snapshot {previous_id}:" if previous_id else "first snapshot:"]
    for kind in ("files", "keys"):
        for change in ("added", "changed", "removed"):
            for item in changes.get(f"{kind}_{change}", []):
                lines.append(f"  {kind[:-1]} {change}: {item}")
    return [{"prepared": "\n".join(lines) + "\n"}]


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


def prune_ids(root: str, name: str, keep: int, *, protect: str | None = None) -> list[str]:
    """The oldest snapshots beyond ``keep`` (never ``protect``, the one just taken or matched)."""
    if keep < 1:
        raise SnapshotError(f"keep must be at least 1, got {keep}")
    ids = [item["id"] for item in list_snapshots(root, name)]
    doomed = ids[:-keep] if len(ids) > keep else []
    return [snap_id for snap_id in doomed if snap_id != protect]


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    fields = (
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
    return {key: summary.get(key) for key in fields if key in summary}
