# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What changed: between two snapshots (the ``changes`` of a take) and what a restore will change,
as Ansible diff entries."""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    RestorePlan,
    key_from_json,
    key_label,
    read_file_copy,
)

DIFF_MAX_BYTES = 256 * 1024
_FILE_FIELDS = ("type", "sha256", "mode", "uid", "gid", "target")
_KEY_FIELDS = ("type", "value_digest")


def _files_of(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in manifest["entries"] if e["type"] != "absent"} if manifest else {}


def _keys_of(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {key_label(key_from_json(e)): e for e in manifest["keys"]} if manifest else {}


def compare(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, list[str]]:
    """Names of files and keys added, changed and removed between two manifests."""
    changes: dict[str, list[str]] = {}
    for label, old_items, new_items, fields in (
        ("files", _files_of(old), _files_of(new), _FILE_FIELDS),
        ("keys", _keys_of(old), _keys_of(new), _KEY_FIELDS),
    ):
        changes[f"{label}_added"] = sorted(set(new_items) - set(old_items))
        changes[f"{label}_removed"] = sorted(set(old_items) - set(new_items))
        changes[f"{label}_changed"] = sorted(
            item
            for item in set(new_items) & set(old_items)
            if any(new_items[item].get(f) != old_items[item].get(f) for f in fields)
        )
    return changes


def take_diff(previous_id: str | None, changes: dict[str, list[str]]) -> list[dict[str, Any]]:
    lines = [f"changes since snapshot {previous_id}:" if previous_id else "first snapshot:"]
    for kind in ("files", "keys"):
        for change in ("added", "changed", "removed"):
            for item in changes.get(f"{kind}_{change}", []):
                lines.append(f"  {kind[:-1]} {change}: {item}")
    return [{"prepared": "\n".join(lines) + "\n"}]


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


def _file_diff(plan: RestorePlan, entry: dict[str, Any]) -> dict[str, Any]:
    path = entry["path"]
    header = {"before_header": path, "after_header": f"{path} (snapshot {plan.snap_id})"}
    exists = os.path.isfile(path) and not os.path.islink(path)
    before = _read_limited(path) if exists else b""
    after = read_file_copy(plan.snapdir, entry) if entry["size"] <= DIFF_MAX_BYTES else None
    if before is None or after is None:
        return {**header, "prepared": f"{path}: too large to show (restored from snapshot)\n"}
    before_text, after_text = _text_or_none(before), _text_or_none(after)
    if before_text is None or after_text is None:
        return {**header, "prepared": f"Binary file {path} differs ({len(before)} -> {len(after)} bytes)\n"}
    return {**header, "before": before_text, "after": after_text}


def restore_diff(plan: RestorePlan) -> list[dict[str, Any]]:
    """Ansible diff entries: unified diffs of text files, one line for binary files, key changes."""
    diffs = [_file_diff(plan, entry) for entry in plan.writes]
    for entry in plan.mkdirs:
        diffs.append({"prepared": f"create directory {entry['path']} ({_mode_owner(entry)})\n"})
    for entry in plan.links:
        diffs.append({"prepared": f"symlink {entry['path']} -> {entry['target']}\n"})
    for entry in plan.metadata:
        diffs.append({"prepared": f"{entry['path']}: {_mode_owner(entry['before'])} -> {_mode_owner(entry)}\n"})
    if plan.removals:
        lines = "".join(f"  {path}\n" for path in plan.removals)
        diffs.append({"prepared": f"remove (did not exist at snapshot time):\n{lines}"})
    if plan.keys_changed:
        diffs.append({"prepared": _key_changes_text(plan)})
    return diffs


def _key_changes_text(plan: RestorePlan) -> str:
    lines = [f"Redis keys (snapshot {plan.snap_id}):"]
    added = [key_label(name) for name, _entry, why in plan.key_restores if why == "missing"]
    changed = [key_label(name) for name, _entry, why in plan.key_restores if why != "missing"]
    removed = [key_label(name) for name in plan.key_deletes]
    for title, keys in (
        ("restored (missing now)", added),
        ("restored (changed)", changed),
        ("deleted (not in snapshot)", removed),
    ):
        lines.extend(f"  {title}: {key}" for key in keys)
    return "\n".join(lines) + "\n"
