# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filesystem primitives that never leave a half-done state (atomic write, atomic symlink, lock),
and the small helpers every file-handling module_utils shares: file sha256, "path is inside",
UTC timestamps of history records."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


class LockHeld(RuntimeError):
    """Another run holds the lock; the message names it."""


def sha256_file(path: str | os.PathLike, *, copy_to: BinaryIO | None = None) -> tuple[str, int]:
    """The sha256 (hex) and size of the bytes read from ``path``; with ``copy_to`` they are also
    written there, so that a copy and its checksum come from one read."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
    return digest.hexdigest(), size


def is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both already normalised or resolved)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def utc_iso(ts: float | None = None) -> str:
    """``ts`` (default now) as UTC ISO 8601 with microseconds: ``2026-11-24T10:15:00.000000Z``."""
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1_000_000):06d}Z"


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, *, mode: int = 0o644, uid: int = -1, gid: int = -1) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, chmod/chown, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _rename_into_place(tmp, path)


def atomic_symlink(link: str | os.PathLike, target: str) -> None:
    """Point ``link`` at ``target`` with no instant where ``link`` is missing (symlink + rename)."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    os.symlink(target, tmp)
    _rename_into_place(tmp, link)


def _rename_into_place(tmp: str | os.PathLike, path: Path) -> None:
    """rename(2) ``tmp`` over ``path`` and make it durable; ``tmp`` is removed if the rename fails."""
    try:
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync: an append-only log that survives a crash mid-run.

    A torn last line (a crash mid-append) is ended first, so the new record is a line of its own
    instead of being glued to the fragment and lost with it.
    """
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete records (JSON objects); a torn line (crash mid-append) or other junk is ignored."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class FileLock:
    """An exclusive flock on ``path``, waited for at most ``timeout`` seconds; then fails naming the holder.

    The holder (host, pid, user, since) is written into the lock file so that the second run's
    error says who to wait for. The kernel drops the lock when the holder dies, so no stale lock
    survives a killed run.
    """

    def __init__(self, path: str | os.PathLike, owner: str, timeout: float = 0) -> None:
        self.path = Path(path)
        self.owner = owner
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    waited = f" (waited {self.timeout:g} s)" if self.timeout else ""
                    raise LockHeld(f"{self.path} is locked by another run{waited}: {holder}") from None
                time.sleep(0.2)
        holder = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "owner": self.owner,
                "since": utc_iso(),
            }
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
