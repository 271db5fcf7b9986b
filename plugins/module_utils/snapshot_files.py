# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file side of a snapshot: which host paths it covers (bounded, never on a pseudo-filesystem),
and how a restore plans and applies the changes to them."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import (
    atomic_symlink,
    atomic_write,
    is_within,
    sha256_file,
)
from ansible_collections.queueops.rollback.plugins.module_utils.identity import GLOB_CHARS
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    FILES_BLOB,
    CorruptSnapshot,
    Limits,
    PathNotAllowed,
    RestorePlan,
    SnapshotError,
    read_file_copy,
)

PSEUDO_ROOTS = ("/proc", "/sys", "/dev", "/run")
# Kernel filesystems that are not configuration (and can be endless), wherever they are mounted.
PSEUDO_FS_TYPES = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs",
        "configfs", "fusectl", "pstore", "bpf", "mqueue", "hugetlbfs", "efivarfs", "binfmt_misc",
        "rpc_pipefs", "nsfs", "selinuxfs",
    }
)  # fmt: skip
MOUNTINFO = "/proc/self/mountinfo"


# --------------------------------------------------------------------------- allowed places


def resolved(path: str) -> str:
    """The real location of ``path`` without following ``path`` itself if it is a symlink."""
    parent, base = os.path.split(os.path.normpath(path))
    return os.path.join(os.path.realpath(parent or "/"), base) if base else os.path.realpath(parent)


def _unescape_mount_point(field_text: str) -> str:
    """mountinfo writes space, tab, newline and backslash in mount points as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field_text = field_text.replace(escaped, plain)
    return field_text


def parse_mountinfo(mountinfo: str) -> list[tuple[str, str]]:
    """``(mount point, filesystem type)`` of every mount in ``/proc/self/mountinfo`` text, in its order."""
    mounts = []
    for line in mountinfo.splitlines():
        left, _sep, right = line.partition(" - ")
        fields, fs_fields = left.split(), right.split()
        if len(fields) >= 5 and fs_fields:
            mounts.append((_unescape_mount_point(fields[4]), fs_fields[0]))
    return mounts


def _read_mounts() -> list[tuple[str, str]]:
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            return parse_mountinfo(handle.read())
    except OSError:
        return []  # no /proc: the prefix rule still applies


class Places:
    """Where a snapshot may read and write: under ``allowed_roots`` (when set), never on a
    pseudo-filesystem, and never inside the snapshot store itself."""

    def __init__(
        self, store_root: str, allowed_roots: list[str] | None, mounts: list[tuple[str, str]] | None = None
    ) -> None:
        self.store_root = os.path.realpath(store_root)
        self.allowed_roots = allowed_roots or []
        self._real_roots = [os.path.realpath(root) for root in self.allowed_roots]
        # Later mounts lie on top of earlier ones at the same point: the dict keeps the last.
        self._mount_types = dict(_read_mounts() if mounts is None else mounts)

    def pseudo_filesystem(self, real: str) -> str | None:
        """Words for the pseudo-filesystem ``real`` (a resolved path) lies on, or None."""
        for root in PSEUDO_ROOTS:
            if is_within(real, root):
                return root
        point = real
        while point not in self._mount_types and point != "/":  # the deepest mount holding it
            point = os.path.dirname(point)
        fs_type = self._mount_types.get(point)
        if fs_type not in PSEUDO_FS_TYPES:
            return None
        return f"a {fs_type} filesystem mounted at {point}"

    def check(self, path: str, real: str | None = None) -> None:
        """PathNotAllowed unless ``path`` (resolved: ``real``) may be snapshotted or restored."""
        real = resolved(path) if real is None else real
        where = self.pseudo_filesystem(real)
        if where is not None:
            shown = path if real == path else f"{path} (really {real})"
            raise PathNotAllowed(f"path {shown} is on a pseudo-filesystem ({where}): it is not configuration")
        if self._real_roots and not any(is_within(real, root) for root in self._real_roots):
            raise PathNotAllowed(f"path {path} is outside allowed_roots ({', '.join(self.allowed_roots)})")

    def in_store(self, path: str, real: str | None = None) -> bool:
        return is_within(resolved(path) if real is None else real, self.store_root)


# ------------------------------------------------------------------------------------- globs


def has_glob(path: str) -> bool:
    return bool(GLOB_CHARS & set(path))


def glob_prefix(pattern: str) -> str:
    """The directory part of ``pattern`` before its first glob character."""
    literal = pattern.split("*")[0].split("?")[0].split("[")[0]
    return os.path.normpath(literal if literal.endswith("/") else os.path.dirname(literal) or "/")


def _names(directory: str, component: str) -> list[str]:
    """Sorted names in ``directory`` matching ``component``; hidden ones only for a pattern that starts with a dot."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []  # unreadable or not a directory: no match, as glob does
    hidden = component.startswith(".")
    return sorted(n for n in names if (hidden or not n.startswith(".")) and fnmatch.fnmatchcase(n, component))


def _real_subdirs(directory: str) -> Iterator[str]:
    for name in _names(directory, "*"):
        child = os.path.join(directory, name)
        if os.path.isdir(child) and not os.path.islink(child):
            yield child


class _Glob:
    """Matches of one absolute pattern, produced lazily so the walk stops where a limit is crossed.

    ``*``, ``?`` and ``[...]`` match within a name (not a leading dot); ``**`` matches any depth,
    never entering a symlinked directory (a snapshot keeps links as links, and loops end there),
    a pseudo-filesystem, or more directories than ``max_files``.
    """

    def __init__(self, pattern: str, places: Places, limits: Limits) -> None:
        self.pattern = pattern
        self.places = places
        self.limits = limits

    def matches(self) -> Iterator[str]:
        parts = [part for part in self.pattern.split("/") if part]
        yield from self._expand("/", parts)

    def _expand(self, base: str, parts: list[str]) -> Iterator[str]:
        if not parts:
            if os.path.lexists(base):
                yield base
            return
        head, rest = parts[0], parts[1:]
        if head == "**":
            yield from self._expand_any_depth(base, rest)
        elif has_glob(head):
            for name in _names(base, head):
                yield from self._expand(os.path.join(base, name), rest)
        elif not rest or os.path.isdir(os.path.join(base, head)):
            yield from self._expand(os.path.join(base, head), rest)

    def _expand_any_depth(self, base: str, rest: list[str]) -> Iterator[str]:
        while rest and rest[0] == "**":
            rest = rest[1:]
        if not os.path.isdir(base):
            return
        self._enter(base)
        if rest:
            yield from self._expand(base, rest)
        else:
            yield base
            for name in _names(base, "*"):
                child = os.path.join(base, name)
                if not os.path.isdir(child) or os.path.islink(child):
                    yield child
        for child in _real_subdirs(base):
            yield from self._expand_any_depth(child, rest)

    def _enter(self, directory: str) -> None:
        self.limits.count_walked(self.pattern, directory)
        self.places.check(directory)


# ------------------------------------------------------------------------------------- scan


def _stat_entry(path: str, st: os.stat_result) -> dict[str, Any]:
    return {"path": path, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


@dataclass
class FileScan:
    roots: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _Scanner:
    def __init__(self, places: Places, limits: Limits) -> None:
        self.places = places
        self.limits = limits
        self.scan = FileScan()

    def add(self, path: str, root: str) -> None:
        """Record ``path`` (recursively when it is a directory) under the snapshotted ``root``."""
        real = resolved(path)
        if path in self.scan.entries or self.places.in_store(path, real):
            return
        self.places.check(path, real)
        self.limits.count_item(path)
        st = os.lstat(path)
        entry = _stat_entry(path, st)
        entry["relative"] = os.path.relpath(path, os.path.dirname(root)) if path != root else os.path.basename(root)
        self.scan.entries[path] = entry
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            entry.update(type="symlink", target=target, sha256=hashlib.sha256(os.fsencode(target)).hexdigest())
        elif stat.S_ISREG(st.st_mode):
            self.limits.count_bytes(st.st_size, path)  # before reading it: a huge file is never read
            sha, size = sha256_file(path)
            self.limits.count_bytes(size - st.st_size, path)
            entry.update(type="file", sha256=sha, size=size)
        elif stat.S_ISDIR(st.st_mode):
            entry["type"] = "dir"
            for child in sorted(os.listdir(path)):
                self.add(os.path.join(path, child), root)
        else:
            # A fifo, socket or device: not copied, but recorded so that a restore leaves it alone.
            entry["type"] = "special"
            self.scan.warnings.append(
                f"{path} is neither a file, a directory nor a symlink: not snapshotted (a restore leaves it as it is)"
            )

    def add_glob(self, pattern: str) -> None:
        self.places.check(glob_prefix(pattern))
        self.scan.roots.append({"path": pattern, "kind": "glob"})
        for match in _Glob(pattern, self.places, self.limits).matches():
            match = os.path.normpath(match)
            self.add(match, match)

    def add_root(self, path: str) -> None:
        self.places.check(path)
        if self.places.in_store(path):
            raise SnapshotError(f"path {path} is inside the snapshot root {self.places.store_root}")
        if not os.path.lexists(path):
            self.scan.roots.append({"path": path, "kind": "absent"})
            self.scan.entries[path] = {"path": path, "type": "absent", "relative": os.path.basename(path)}
            self.scan.warnings.append(f"{path} does not exist: recorded as absent (a restore removes it)")
            return
        is_link = os.path.islink(path)
        if is_link and os.path.isdir(path):
            self.scan.warnings.append(
                f"{path} is a symlink to a directory: only the link is snapshotted, not the files in it; "
                f"give the directory it points to ({os.path.realpath(path)}) to snapshot them"
            )
        self.scan.roots.append({"path": path, "kind": "dir" if os.path.isdir(path) and not is_link else "file"})
        self.add(path, path)


def scan_paths(
    paths: list[str], store_root: str, allowed_roots: list[str] | None = None, limits: Limits | None = None
) -> FileScan:
    """Expand files, directories and globs into manifest entries (no content copied yet).

    Refused before anything is written: relative paths, paths outside ``allowed_roots``, on a
    pseudo-filesystem or inside the store, and more than the ``limits`` allow.
    """
    scanner = _Scanner(Places(store_root, allowed_roots), limits or Limits())
    for raw in paths:
        if not os.path.isabs(raw):
            raise SnapshotError(f"path {raw!r} must be absolute")
        path = os.path.normpath(raw)
        if has_glob(path):
            scanner.add_glob(path)
        else:
            scanner.add_root(path)
    return scanner.scan


def write_file_pack(out: BinaryIO, entries: list[dict[str, Any]]) -> None:
    """Copy each distinct file content into the pack at its manifest offset, checking it did not change."""
    written: set[str] = set()
    for entry in entries:
        if entry["type"] != "file" or entry["sha256"] in written:
            continue
        if out.tell() != entry["offset"]:
            raise SnapshotError(f"internal error: {FILES_BLOB} offset of {entry['path']} is wrong")
        sha, _size = sha256_file(entry["path"], copy_to=out)
        if sha != entry["sha256"]:
            raise SnapshotError(f"{entry['path']} changed while the snapshot was taken; run again")
        written.add(entry["sha256"])


# ----------------------------------------------------------------------------------- restore


def _current_tree(path: str, limits: Limits) -> list[str]:
    """Everything under a directory (deepest first for removal), without following symlinks."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in [*filenames, *dirnames]:
            full = os.path.join(dirpath, name)
            limits.count_item(full)
            found.append(full)
    return found


def _real_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _scope_paths(manifest: dict[str, Any], places: Places, limits: Limits) -> list[str]:
    """Paths that exist now inside what the snapshot covered (snapshotted directories, globs)."""
    current: list[str] = []
    for root in manifest["roots"]:
        path = root["path"]
        if root["kind"] == "glob":
            for match in _Glob(path, places, limits).matches():
                match = os.path.normpath(match)
                if _real_dir(match):
                    current.extend(_current_tree(match, limits))
                current.append(match)
        elif root["kind"] in ("dir", "absent") and os.path.lexists(path):
            if _real_dir(path):
                current.extend(_current_tree(path, limits))
            if root["kind"] == "absent":
                current.append(path)
    return [p for p in dict.fromkeys(current) if not places.in_store(p)]


def plan_files(
    plan: RestorePlan,
    manifest: dict[str, Any],
    places: Places,
    *,
    keep_new_files: bool = False,
    limits: Limits | None = None,
) -> None:
    """The file side of ``plan``: what to create, write, relink, fix and remove. Touches nothing."""
    for entry in manifest["entries"]:
        places.check(entry["path"])
    known = {e["path"] for e in manifest["entries"] if e["type"] != "absent"}
    for entry in manifest["entries"]:
        _plan_entry(plan, entry)
    if not keep_new_files:
        plan.removals = [p for p in _scope_paths(manifest, places, limits or Limits()) if p not in known]


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
    if st is None or not stat.S_ISREG(st.st_mode) or sha256_file(path)[0] != entry["sha256"]:
        plan.writes.append(entry)
    elif _meta_differs(entry, st):
        plan.metadata.append({**entry, "before": _stat_entry(path, st)})


def _meta_differs(entry: dict[str, Any], st: os.stat_result) -> bool:
    return (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (entry["mode"], entry["uid"], entry["gid"])


def apply_files(plan: RestorePlan, done: RestorePlan) -> None:
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
        if _real_dir(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise
