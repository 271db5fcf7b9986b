# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a snapshot is: its layout on disk, its manifest, how it is verified, its errors, and the
plan of a restore (the files, keys and diff code all work on these).

Layout on the host::

    <root>/<name>/<id>/manifest.json          every item with its sha256 (and the content digest)
    <root>/<name>/<id>/manifest.json.sha256   checksum of the manifest itself
    <root>/<name>/<id>/summary.json           id, created, reason, size, counts (for listing only)
    <root>/<name>/<id>/files.bin              file contents back to back (each distinct content once)
    <root>/<name>/<id>/keys.bin               DUMP payloads of the keys, back to back
    <root>/<name>/history.jsonl               taken / restored / deleted, who and when

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
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
SUMMARY = "summary.json"
KEYS_BLOB = "keys.bin"
FILES_BLOB = "files.bin"
HISTORY = "history.jsonl"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_BYTES = 1 << 30


class SnapshotError(Exception):
    """Anything a user must be told about; the message says what and where."""


class CorruptSnapshot(SnapshotError):
    """A snapshot that fails verification; nothing was changed."""


class UnknownSnapshot(SnapshotError):
    """No snapshot with that id (or none at all) under the name."""


class PathNotAllowed(SnapshotError):
    """A path outside ``allowed_roots``, or on a pseudo-filesystem (/proc, /sys, /dev, /run)."""


class LimitExceeded(SnapshotError):
    """More files or bytes than ``max_files`` / ``max_bytes``; nothing was written."""


class RestoreInterrupted(SnapshotError):
    """A restore that stopped part-way; ``done`` is the outline of what it changed before that."""

    def __init__(self, message: str, done: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.done = done


# ------------------------------------------------------------------------------------ limits


@dataclass
class Limits:
    """How much one snapshot may hold; counted while the paths are walked, so a walk stops at once."""

    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES
    items: int = 0
    size: int = 0
    walked: int = 0

    def __post_init__(self) -> None:
        for option in ("max_files", "max_bytes"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SnapshotError(f"{option} must be a whole number of at least 1, got {value!r}")

    def count_item(self, path: str) -> None:
        self.items += 1
        if self.items > self.max_files:
            raise LimitExceeded(
                f"more than max_files={self.max_files} files, directories and links to snapshot "
                f"(the limit was crossed at {path}); nothing was written: narrow paths or raise max_files"
            )

    def count_bytes(self, size: int, what: str) -> None:
        self.size += size
        if self.size > self.max_bytes:
            raise LimitExceeded(
                f"more than max_bytes={self.max_bytes} bytes to snapshot (the limit was crossed at {what}); "
                "nothing was written: narrow paths or redis_keys, or raise max_bytes"
            )

    def count_walked(self, pattern: str, directory: str) -> None:
        self.walked += 1
        if self.walked > self.max_files:
            raise LimitExceeded(
                f"the glob {pattern} looked into more than max_files={self.max_files} directories "
                f"(the limit was crossed at {directory}); nothing was written: narrow the pattern or raise max_files"
            )


# ------------------------------------------------------------------------------------ key names


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


# ------------------------------------------------------------------------------------- manifest


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


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
    return hashlib.sha256(canonical_json({"spec": spec, "files": files, "keys": keys})).hexdigest()


def _key_entries(key_states: dict[bytes, dict[str, Any]]) -> list[dict[str, Any]]:
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
    return keys


def build_manifest(
    name: str,
    paths: list[str],
    patterns: list[str],
    roots: list[dict[str, Any]],
    file_entries: dict[str, dict[str, Any]],
    key_states: dict[bytes, dict[str, Any]],
) -> dict[str, Any]:
    """The manifest of a snapshot: entries sorted by path, each distinct file content once in the pack."""
    file_offsets: dict[str, int] = {}
    entries = [file_entries[path] for path in sorted(file_entries)]
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
        "roots": roots,
        "entries": entries,
        "files_size": pack_size,
        "keys": _key_entries(key_states),
    }
    manifest["content_digest"] = content_digest(manifest)
    return manifest


def _label(snapdir: Path) -> str:
    return f"snapshot {snapdir.parent.name}/{snapdir.name}"


def load_manifest(snapdir: Path) -> dict[str, Any]:
    """The manifest, checked against its own checksum; CorruptSnapshot when it cannot be trusted."""
    label = _label(snapdir)
    try:
        raw = (snapdir / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise CorruptSnapshot(f"{label} is corrupt: {MANIFEST} is missing") from None
    except OSError as exc:
        raise CorruptSnapshot(f"{label} is corrupt: cannot read {MANIFEST}: {exc.strerror or exc}") from None
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
    label = _label(snapdir)
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


def read_file_copy(snapdir: Path, entry: dict[str, Any]) -> bytes:
    with open(snapdir / FILES_BLOB, "rb") as pack:
        pack.seek(entry["offset"])
        return pack.read(entry["size"])


# ------------------------------------------------------------------------------- restore plan


@dataclass
class RestorePlan:
    """What a restore changes, worked out from a verified snapshot before anything is touched.

    The same shape collects what a restore has done, step by step, so that one that stops
    part-way reports exactly that.
    """

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
    current: str | None = None  # while applying: the path being worked on

    @property
    def files_changed(self) -> bool:
        return any((self.mkdirs, self.writes, self.metadata, self.links, self.removals))

    @property
    def keys_changed(self) -> bool:
        return bool(self.key_restores or self.key_deletes)

    @property
    def changed(self) -> bool:
        return self.files_changed or self.keys_changed

    def outline(self) -> dict[str, list[str]]:
        return {
            "dirs_created": [e["path"] for e in self.mkdirs],
            "files_restored": [e["path"] for e in self.writes] + [e["path"] for e in self.links],
            "files_metadata_fixed": [e["path"] for e in self.metadata],
            "files_removed": list(self.removals),
            "keys_restored": [key_label(name) for name, _entry, _why in self.key_restores],
            "keys_deleted": [key_label(name) for name in self.key_deletes],
        }

    def counts(self) -> dict[str, int]:
        return {kind: len(items) for kind, items in self.outline().items()}
