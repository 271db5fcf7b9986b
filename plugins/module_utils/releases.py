# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Releases of a worker pool on one host: stage, activate, fail, roll back, prune, query.

Layout under ``<root>/<pool>/``::

    releases/<version>/                 one immutable release: code (+ venv/ of its own)
    releases/<version>/.queueops/       release.json (manifest), requirements.txt, wheelhouse.sha256
    releases/.build-<version>-*/        a build in progress: never a target, removed by the next run
    current -> releases/<version>       switched atomically (temporary symlink + rename)
    history.jsonl                       append-only: staged, activated, failed, rolled_back, pruned
    .lock                               per-pool flock; its content names the holder

and beside the pools, under ``<root>/``::

    .pip/<interpreter>/                 a virtualenv with pip, made once: it builds every release's venv,
                                        whatever its pool

The history is the single source of truth for which releases were active, in which order, and
which are failed. ``current`` (the symlink) is the truth for what runs now; when the two disagree
(a run was killed between switching and recording, or someone switched by hand) the next mutating
run records what it finds before doing anything else, so every decision is taken on a complete
history. Rollback order: mark failed -> switch -> record the switch. A run killed after "mark
failed" leaves ``X`` current and failed: the re-run switches. A run killed after the switch leaves
``X`` no longer current: the re-run only records the switch; it never steps back twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ansible_collections.queueops.rollback.plugins.module_utils.events import actor
from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import (
    FileLock,
    LockHeld,
    append_jsonl,
    atomic_symlink,
    atomic_write,
    fsync_dir,
    is_within,
    read_jsonl,
    sha256_file,
    utc_iso,
)
from ansible_collections.queueops.rollback.plugins.module_utils.identity import (
    InvalidName,
    validate_name,
)

META_DIR = ".queueops"
MANIFEST = f"{META_DIR}/release.json"
REQUIREMENTS_FILE = f"{META_DIR}/requirements.txt"
WHEELHOUSE_LIST = f"{META_DIR}/wheelhouse.sha256"
VENV_DIR = "venv"
PIP_DIR = ".pip"
PIP_MARK = ".queueops-pip"
QUEUES_DIR = "queues"
# pip installs into another environment (--python) from 22.3 on.
PIP_PYTHON_OPTION = (22, 3)
BUILD_PREFIX = ".build-"
PRUNE_PREFIX = ".prune-"
SWITCH_ACTIONS = ("activated", "rolled_back")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_PACKAGE_SUFFIXES = (".whl", ".tar.gz", ".zip")


class ReleaseError(Exception):
    """Refused input or state; the message is shown to the user as it is."""


# ---------------------------------------------------------------------------------------------
# Content digest: sha256 over sorted relative paths + content (files, exec bit, symlink targets)
# ---------------------------------------------------------------------------------------------


def _excluded(relpath: str) -> bool:
    return relpath in (MANIFEST, VENV_DIR) or relpath.startswith(VENV_DIR + "/")


def tree_entries(top: str | os.PathLike) -> dict[str, str]:
    """``{relative path: "file:<sha256>:<x|->" | "link:<target>"}`` for a release tree.

    Directories are implied by their content; the release's ``venv/``, its manifest and
    ``__pycache__`` directories are not content (the venv is built from
    ``.queueops/requirements.txt``, which is).
    """
    top = os.fspath(top)
    entries: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if _excluded(rel_dir + name) or name == "__pycache__":
                dirnames.remove(name)
            elif os.path.islink(full):
                dirnames.remove(name)
                entries[rel_dir + name] = "link:" + os.readlink(full)
        for name in filenames:
            rel, full = rel_dir + name, os.path.join(dirpath, name)
            if _excluded(rel):
                continue
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = "link:" + os.readlink(full)
            elif stat.S_ISREG(info.st_mode):
                executable = "x" if info.st_mode & 0o111 else "-"
                entries[rel] = f"file:{sha256_file(full)[0]}:{executable}"
    return entries


def content_digest(entries: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(entries):
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0" + entries[rel].encode() + b"\n")
    return "sha256:" + digest.hexdigest()


def bytes_entry(data: bytes) -> str:
    return f"file:{hashlib.sha256(data).hexdigest()}:-"


# ---------------------------------------------------------------------------------------------
# Tarballs: every member must stay inside the release
# ---------------------------------------------------------------------------------------------


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def check_member(member: tarfile.TarInfo) -> str:
    """The member's safe relative name, or ReleaseError if it could write outside the release."""
    raw = member.name
    name = _member_name(member)
    if raw.startswith("/") or posixpath.isabs(name):
        raise ReleaseError(f"archive member {raw!r} has an absolute path; refusing to extract")
    if ".." in name.split("/") or "\\" in name or "\0" in name:
        raise ReleaseError(f"archive member {raw!r} escapes the release directory ('..'); refusing to extract")
    if member.issym():
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if posixpath.isabs(target) or resolved == ".." or resolved.startswith("../"):
            raise ReleaseError(
                f"archive member {raw!r} is a link to {target!r} outside the release directory; refusing to extract"
            )
    elif member.islnk():
        target = member.linkname
        while target.startswith("./"):
            target = target[2:]
        target = posixpath.normpath(target) if target else target
        if not target or posixpath.isabs(target) or target == ".." or target.startswith("../"):
            raise ReleaseError(
                f"archive member {raw!r} is a hard link to {member.linkname!r} outside the release directory; "
                "refusing to extract"
            )
    elif not (member.isfile() or member.isdir()):
        raise ReleaseError(f"archive member {raw!r} is a device or FIFO; refusing to extract")
    return name


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract ``archive`` into the empty directory ``dest``; ReleaseError on any escaping member.

    Each member is checked by name, and again against the real path of its parent on disk (so a
    chain of links inside the archive cannot redirect a later member). Owners and set-uid bits
    from the archive are not applied.
    """
    dest = os.path.realpath(dest)
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with block below
    except (tarfile.TarError, OSError) as exc:
        raise ReleaseError(f"cannot read archive {archive}: {exc}") from None
    try:
        with tar:
            _extract_members(tar, dest)
    except _UNREADABLE_ARCHIVE as exc:  # truncated or corrupt: the build directory is removed by the caller
        raise ReleaseError(f"cannot read archive {archive}: {exc or type(exc).__name__}") from None


# A truncated or corrupt archive shows up while members are read, not when it is opened.
_UNREADABLE_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


def _extract_members(tar: tarfile.TarFile, dest: str) -> None:
    members = tar.getmembers()
    names = [check_member(member) for member in members]  # all checked before anything is written
    for index, member in enumerate(members):
        name = names[index]
        if not name:
            continue
        target = os.path.join(dest, *name.split("/"))
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        if not is_within(os.path.realpath(parent), dest):
            raise ReleaseError(f"archive member {member.name!r} is written through a link outside the release")
        if member.isdir():
            os.makedirs(target, exist_ok=True)
        elif member.issym():
            os.symlink(member.linkname, target)
            if not is_within(os.path.realpath(target), dest):
                raise ReleaseError(
                    f"archive member {member.name!r} is a link to {member.linkname!r} outside the release directory"
                )
        else:  # regular file or hard link: written as a regular file
            try:
                source = tar.extractfile(member)
            except KeyError:  # a hard link to a member that is not (earlier) in the archive
                raise ReleaseError(
                    f"archive member {member.name!r} is a hard link to {member.linkname!r}, "
                    "which is not in the archive before it"
                ) from None
            if source is None:
                raise ReleaseError(f"archive member {member.name!r} cannot be read")
            mode = 0o755 if member.mode & 0o111 else 0o644
            with source, open(target, "xb") as out:
                shutil.copyfileobj(source, out)
            os.chmod(target, mode)


def is_archive(path: str) -> bool:
    return path.endswith(_ARCHIVE_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# Wheelhouse + requirements
# ---------------------------------------------------------------------------------------------


def requirements_text(requirements: list[str]) -> bytes:
    """What goes into ``.queueops/requirements.txt``: a requirements file's content, or the specs."""
    if len(requirements) == 1 and requirements[0].startswith("/") and not requirements[0].endswith(_PACKAGE_SUFFIXES):
        path = requirements[0]
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ReleaseError(f"cannot read requirements file {path}: {exc.strerror}") from None
    for spec in requirements:
        if not spec.strip() or "\n" in spec:
            raise ReleaseError(f"invalid requirement {spec!r}: one package specification per item")
    return ("\n".join(spec.strip() for spec in requirements) + "\n").encode()


def wheelhouse_listing(wheelhouse: str) -> bytes:
    """``sha256  name`` of every package file in the wheelhouse: part of the release's identity."""
    if not os.path.isdir(wheelhouse):
        raise ReleaseError(f"wheelhouse {wheelhouse} is not a directory")
    lines = []
    for name in sorted(os.listdir(wheelhouse)):
        full = os.path.join(wheelhouse, name)
        if name.startswith(".") or not os.path.isfile(full):
            continue
        lines.append(f"{sha256_file(full)[0]}  {name}\n")
    if not lines:
        raise ReleaseError(f"wheelhouse {wheelhouse} holds no package files")
    return "".join(lines).encode()


def _relocate_venv(venv: str, built_at: str, final: str) -> None:
    """Scripts and activate files name the venv's path: point them at where it will live."""
    old, new = built_at.encode(), final.encode()
    candidates = [os.path.join(venv, "pyvenv.cfg")]
    bindir = os.path.join(venv, "bin")
    candidates += [os.path.join(bindir, name) for name in os.listdir(bindir)]
    for path in candidates:
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > 1 << 20:
            continue
        data = Path(path).read_bytes()
        if old in data:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            Path(path).write_bytes(data.replace(old, new))
            os.chmod(path, mode)


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        tail = out.strip().splitlines()[-15:]
        raise ReleaseError(f"{what} failed (exit {proc.returncode}): " + "\n".join(tail))
    return out


def shared_pip(python: str, home: str) -> str | None:
    """The python of a virtualenv under ``home`` whose pip builds other virtualenvs (``pip --python``),
    made at its first use for this interpreter and kept: ``python -m venv`` spends most of a
    release's build installing pip, which a release's venv never needs. None when that pip is too
    old for ``--python`` (then each release's venv gets a pip of its own, as before)."""
    real = os.path.realpath(shutil.which(python) or python)
    key = f"{os.path.basename(real)}-{hashlib.sha256(real.encode()).hexdigest()[:8]}"
    helper = os.path.join(home, key)
    mark = os.path.join(helper, PIP_MARK)

    def read_mark() -> str | None:
        try:
            return Path(mark).read_text().strip()
        except OSError:
            return None

    state = read_mark()
    if state is None:
        os.makedirs(home, exist_ok=True)
        with FileLock(os.path.join(home, ".lock"), owner=f"making the pip of {real}", timeout=600):
            state = read_mark()  # made meanwhile by another build
            if state is None:
                state = _make_shared_pip(python, home, helper)
    return os.path.join(helper, "bin", "python") if state == "ok" else None


def _make_shared_pip(python: str, home: str, helper: str) -> str:
    shutil.rmtree(helper, ignore_errors=True)  # a build of it killed before its mark
    build = tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=home)
    try:
        _run([python, "-m", "venv", build], f"creating the virtualenv of pip with {python}")
        out = _run([os.path.join(build, "bin", "python"), "-m", "pip", "--version"], "pip --version")
        version = tuple(int(part) for part in out.split()[1].split(".")[:2] if part.isdigit())
        state = "ok" if version >= PIP_PYTHON_OPTION else "too old for --python"
        atomic_write(os.path.join(build, PIP_MARK), f"{state}\n".encode())
        _relocate_venv(build, build, helper)
        os.chmod(build, 0o755)
        os.rename(build, helper)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return state


def build_venv(
    python: str, venv: str, final_venv: str, wheelhouse: str, requirements_file: str, pip_home: str | None = None
) -> None:
    """``python -m venv`` + ``pip install --no-index --find-links wheelhouse -r requirements``; with
    ``pip_home``, the venv has no pip of its own and the shared pip there installs into it."""
    helper = shared_pip(python, pip_home) if pip_home else None
    if helper:
        _run([python, "-m", "venv", "--without-pip", venv], f"creating the virtualenv with {python}")
        pip = [helper, "-m", "pip", "--python", os.path.join(venv, "bin", "python"), "install"]
    else:
        _run([python, "-m", "venv", venv], f"creating the virtualenv with {python}")
        pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install"]
    _run(
        [
            *pip,
            "--no-index",
            "--find-links",
            wheelhouse,
            "--disable-pip-version-check",
            "--no-input",
            "-q",
            "-r",
            requirements_file,
        ],
        f"pip install from wheelhouse {wheelhouse}",
    )
    _relocate_venv(venv, venv, final_venv)


# ---------------------------------------------------------------------------------------------
# History: what was active, in which order, and what is failed
# ---------------------------------------------------------------------------------------------


@dataclass
class HistoryView:
    records: list[dict]
    active_sequence: list[str] = field(default_factory=list)  # versions in the order they were made current
    failed: dict[str, dict] = field(default_factory=dict)  # version -> its first "failed" record
    activated_at: dict[str, str] = field(default_factory=dict)  # version -> time it last became current
    staged_at: dict[str, str] = field(default_factory=dict)
    staged_order: list[str] = field(default_factory=list)

    @classmethod
    def from_records(cls, records: list[dict]) -> HistoryView:
        view = cls(records=records)
        for record in records:
            action, version = record.get("action"), record.get("version")
            if action in SWITCH_ACTIONS:
                source, target = record.get("from"), record.get("to")
                if not view.active_sequence and source:
                    view.active_sequence.append(source)
                if target:
                    view.active_sequence.append(target)
                    view.activated_at[target] = record.get("time", "")
            elif action == "failed" and version and version not in view.failed:
                view.failed[version] = record
            elif action == "staged" and version:
                view.staged_at[version] = record.get("time", "")
                if version in view.staged_order:
                    view.staged_order.remove(version)
                view.staged_order.append(version)
        return view

    @property
    def recorded_current(self) -> str | None:
        return self.active_sequence[-1] if self.active_sequence else None

    def last_good_before(self, version: str | None, existing: set[str]) -> str | None:
        """The newest release that was current before ``version`` became current, not failed, on disk."""
        sequence = self.active_sequence
        if version in sequence:
            sequence = sequence[: len(sequence) - 1 - sequence[::-1].index(version)]
        for candidate in reversed(sequence):
            if candidate != version and candidate not in self.failed and candidate in existing:
                return candidate
        return None


# ---------------------------------------------------------------------------------------------
# A pool on this host
# ---------------------------------------------------------------------------------------------


@dataclass
class Release:
    version: str
    state: str  # active | staged | superseded | failed | incomplete
    created: str | None
    activated: str | None
    digest: str | None

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "state": self.state,
            "created": self.created,
            "activated": self.activated,
            "digest": self.digest,
        }


@dataclass
class Source:
    """What a release is made of, before it is built."""

    code: str | None = None  # a directory or an archive with the release's files
    wheelhouse: str | None = None
    requirements: list[str] | None = None
    python: str = "python3"


class Pool:
    """The releases, ``current`` link and history of one pool under ``root``.

    Every mutating method appends what it did (or, in check mode, what it would do) to
    ``self.actions`` and touches nothing in check mode.
    """

    def __init__(self, root: str, name: str, *, check_mode: bool = False, user: str | None = None) -> None:
        try:
            validate_name(name, "pool")
        except InvalidName as exc:
            raise ReleaseError(str(exc)) from None
        if not isinstance(root, str) or not os.path.isabs(root):
            raise ReleaseError(f"root must be an absolute path, got {root!r}")
        self.name = name
        self.root = os.path.normpath(root)
        self.dir = os.path.join(self.root, name)
        self.releases_dir = os.path.join(self.dir, "releases")
        self.queues_dir = os.path.join(self.dir, QUEUES_DIR)
        self.current_link = os.path.join(self.dir, "current")
        self.history_path = os.path.join(self.dir, "history.jsonl")
        self.lock_path = os.path.join(self.dir, ".lock")
        self.check_mode = check_mode
        self.user = user or actor()
        self.actions: list[str] = []
        self.warnings: list[str] = []
        self._would_stage: set[str] = set()
        self._would_history: list[dict] = []
        self._would_current: str | None = None
        self._would_remove: set[str] = set()

    # -- reading ------------------------------------------------------------------------------

    @staticmethod
    def check_version(version: object) -> str:
        try:
            return validate_name(version, "version")
        except InvalidName as exc:
            raise ReleaseError(str(exc)) from None

    def release_path(self, version: str) -> str:
        return os.path.join(self.releases_dir, version)

    def queues_path(self, version: str) -> str:
        """The file that keeps the queues release ``version`` consumes (``record_queues``)."""
        return os.path.join(self.queues_dir, version)

    def history(self) -> HistoryView:
        return HistoryView.from_records(read_jsonl(self.history_path) + self._would_history)

    def versions_on_disk(self) -> set[str]:
        try:
            names = os.listdir(self.releases_dir)
        except FileNotFoundError:
            names = []
        found = {n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(self.releases_dir, n))}
        return (found | self._would_stage) - self._would_remove

    def complete_versions(self) -> set[str]:
        return {v for v in self.versions_on_disk() if v in self._would_stage or self.manifest(v) is not None}

    def manifest(self, version: str) -> dict | None:
        try:
            return json.loads(Path(self.release_path(version), MANIFEST).read_bytes())
        except (OSError, ValueError):
            return None

    def current(self) -> str | None:
        """The version ``current`` points to, or None when there is no link yet."""
        if self._would_current is not None:
            return self._would_current
        try:
            target = os.readlink(self.current_link)
        except FileNotFoundError:
            return None
        except OSError:
            raise ReleaseError(f"{self.current_link} exists and is not a symlink; refusing to manage it") from None
        if not os.path.isabs(target):
            target = os.path.join(self.dir, target)
        target = os.path.normpath(target)
        if os.path.dirname(target) != self.releases_dir:
            raise ReleaseError(f"{self.current_link} points to {target}, outside {self.releases_dir}")
        return os.path.basename(target)

    def previous(self, view: HistoryView | None = None) -> str | None:
        view = view or self.known_history()
        return view.last_good_before(self.current(), self.complete_versions())

    def _unrecorded_switch(self, view: HistoryView) -> dict | None:
        """The switch record ``reconcile`` would append (current differs from the history), or None."""
        actual = self.current()
        recorded = view.recorded_current
        if actual == recorded or actual is None:
            return None
        return {
            "action": "rolled_back" if recorded in view.failed else "activated",
            "version": actual,
            "from": recorded,
            "to": actual,
        }

    def known_history(self) -> HistoryView:
        """The history as the next mutating run sees it: with a switch not recorded yet (read-only)."""
        view = self.history()
        pending = self._unrecorded_switch(view)
        return view if pending is None else HistoryView.from_records([*view.records, pending])

    def releases(self) -> list[Release]:
        view, current = self.known_history(), self.current()
        complete = self.complete_versions()
        order = {v: i for i, v in enumerate(view.staged_order)}
        would_digest = {r["version"]: r.get("digest") for r in self._would_history if r["action"] == "staged"}
        result = []
        for version in self.versions_on_disk():
            manifest = self.manifest(version) or {}
            if version not in complete:
                state = "incomplete"
            elif version == current:
                state = "active"
            elif version in view.failed:
                state = "failed"
            elif version in view.activated_at:
                state = "superseded"
            else:
                state = "staged"
            created = manifest.get("created") or view.staged_at.get(version)
            digest = manifest.get("digest") or would_digest.get(version)  # check mode: not built, but known
            result.append(Release(version, state, created, view.activated_at.get(version), digest))
        result.sort(key=lambda r: (order.get(r.version, -1), r.created or "", r.version))
        return result

    def facts(self) -> dict:
        view = self.known_history()
        current = self.current()
        return {
            "current": current,
            "current_path": self.current_link,
            "current_release_path": os.path.join(self.releases_dir, current) if current else None,
            "previous": self.previous(view),
            "releases": [r.as_dict() for r in self.releases()],
        }

    def describe(self) -> str:
        """A few lines for ``diff``: the current target and every release's state."""
        lines = [f"current: {self.current() or '(none)'}"]
        lines += [f"release {r.version}: {r.state}" for r in self.releases()]
        return "\n".join(lines) + "\n"

    # -- writing helpers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, purpose: str, *, create: bool, timeout: float = 0) -> Iterator[None]:
        """Hold the pool lock for a mutating run (not in check mode: it must touch nothing); wait at
        most ``timeout`` seconds for another run's."""
        if self.check_mode or (not create and not os.path.isdir(self.dir)):
            yield
            return
        os.makedirs(self.releases_dir, exist_ok=True)
        try:
            lock = FileLock(self.lock_path, f"{self.user}: worker_version {purpose}", timeout).__enter__()
        except LockHeld as exc:
            raise ReleaseError(f"pool {self.name} is busy: {exc}") from None
        try:
            self._remove_unfinished()
            yield
        finally:
            lock.__exit__(None, None, None)

    def _remove_unfinished(self) -> None:
        for name in os.listdir(self.releases_dir):
            if name.startswith((BUILD_PREFIX, PRUNE_PREFIX)):
                shutil.rmtree(os.path.join(self.releases_dir, name), ignore_errors=True)
                self.warnings.append(f"removed {name}, left unfinished by an interrupted run")

    def _record(
        self,
        action: str,
        *,
        version: str | None = None,
        source: str | None = None,
        target: str | None = None,
        reason: str | None = None,
        **extra: object,
    ) -> None:
        record = {
            "time": utc_iso(),
            "action": action,
            "pool": self.name,
            "version": version,
            "from": source,
            "to": target,
            "user": self.user,
            "reason": reason,
        }
        record.update(extra)
        if self.check_mode:
            self._would_history.append(record)
        else:
            append_jsonl(self.history_path, record)

    def _switch(self, version: str) -> None:
        if self.check_mode:
            self._would_current = version
        else:
            atomic_symlink(self.current_link, f"releases/{version}")

    def reconcile(self) -> None:
        """Record a switch that happened without being recorded (killed run, manual change)."""
        self._record_unrecorded_stages()
        pending = self._unrecorded_switch(self.history())
        if pending is None:
            return
        actual, recorded = pending["to"], pending["from"]
        self.actions.append(
            f"record that current is {actual or 'no release'}, not {recorded or 'no release'} as the history said"
        )
        self._record(
            pending["action"],
            version=actual,
            source=recorded,
            target=actual,
            reason=f"recorded after the fact: current pointed to {actual} while the history said {recorded} "
            "(an interrupted run or a change by hand)",
        )

    def _record_unrecorded_stages(self) -> None:
        """Record releases on disk the history does not hold (a run killed between rename and record)."""
        last: dict[str, str] = {}
        for record in self.history().records:
            if record.get("action") in ("staged", "pruned") and isinstance(record.get("version"), str):
                last[record["version"]] = record["action"]
        missing = [v for v in self.complete_versions() - self._would_stage if last.get(v) != "staged"]
        for version in sorted(missing, key=lambda v: ((self.manifest(v) or {}).get("created") or "", v)):
            manifest = self.manifest(version) or {}
            self.actions.append(f"record that release {version} was staged")
            self._record(
                "staged",
                version=version,
                reason=f"recorded after the fact: release {version} was on disk without a staged record "
                "(an interrupted run or a copy by hand)",
                digest=manifest.get("digest"),
                created=manifest.get("created"),
            )

    # -- states -------------------------------------------------------------------------------

    def stage(self, version: str, source: Source, *, reason: str | None = None) -> bool:
        """Build ``releases/<version>`` from ``source``; unchanged if it exists with the same content."""
        self.check_version(version)
        existing = self.manifest(version) if version in self.versions_on_disk() else None
        if version in self.versions_on_disk() and existing is None and version not in self._would_stage:
            raise ReleaseError(
                f"{self.release_path(version)} exists but is not a complete release (no {MANIFEST}); "
                "remove it or choose another version"
            )
        if source.code is None and source.wheelhouse is None:
            if existing is not None:
                return False
            raise ReleaseError(f"release {version} of pool {self.name} does not exist: src is needed to stage it")
        with self._workspace(version) as build:
            digest = self._assemble(source, build)
            if existing is not None:
                if existing.get("digest") == digest:
                    return False
                raise ReleaseError(
                    f"release {version} of pool {self.name} already exists with different content "
                    f"({existing.get('digest')} on disk, {digest} from src); releases are immutable: "
                    "stage a new version"
                )
            self.actions.append(f"stage release {version} ({digest})")
            if self.check_mode:
                self._would_stage.add(version)
                self._record("staged", version=version, reason=reason, digest=digest)
                return True
            if source.wheelhouse is not None:
                final_venv = os.path.join(self.release_path(version), VENV_DIR)
                build_venv(
                    source.python,
                    os.path.join(build, VENV_DIR),
                    final_venv,
                    source.wheelhouse,
                    os.path.join(build, REQUIREMENTS_FILE),
                    pip_home=os.path.join(self.root, PIP_DIR),
                )
            manifest = {
                "pool": self.name,
                "version": version,
                "digest": digest,
                "created": utc_iso(),
                "user": self.user,
                "src": source.code,
                "wheelhouse": source.wheelhouse,
                "requirements": source.requirements,
            }
            os.makedirs(os.path.join(build, META_DIR), exist_ok=True)
            atomic_write(os.path.join(build, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True).encode())
            os.chmod(build, 0o755)
            os.rename(build, self.release_path(version))
            fsync_dir(self.releases_dir)
        self._record("staged", version=version, reason=reason, digest=digest)
        return True

    @contextlib.contextmanager
    def _workspace(self, version: str) -> Iterator[str]:
        """A build directory inside releases/ (so the final rename is atomic); a system temp dir in check mode."""
        if self.check_mode:
            build = tempfile.mkdtemp(prefix="queueops-stage-")
        else:
            os.makedirs(self.releases_dir, exist_ok=True)
            build = tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{version}-", dir=self.releases_dir)
        try:
            yield build
        finally:
            shutil.rmtree(build, ignore_errors=True)  # gone after the rename; removed on any failure

    def _assemble(self, source: Source, build: str) -> str:
        """Lay the release's files out in ``build`` (without the venv); return their content digest."""
        if source.code is not None:
            if not os.path.exists(source.code):
                raise ReleaseError(f"src {source.code} does not exist on the host")
            if os.path.isdir(source.code):
                shutil.copytree(
                    source.code, build, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif is_archive(source.code):
                safe_extract(source.code, build)
            else:
                raise ReleaseError(f"src {source.code} is neither a directory nor a .tar.gz/.tgz/.tar archive")
        if source.wheelhouse is not None:
            if not source.requirements:
                raise ReleaseError("requirements are needed to build a virtualenv from a wheelhouse")
            os.makedirs(os.path.join(build, META_DIR), exist_ok=True)
            Path(build, REQUIREMENTS_FILE).write_bytes(requirements_text(source.requirements))
            Path(build, WHEELHOUSE_LIST).write_bytes(wheelhouse_listing(source.wheelhouse))
        return content_digest(tree_entries(build))

    def activate(self, version: str, *, reason: str | None = None) -> bool:
        self.check_version(version)
        view = self.history()
        if version not in self.complete_versions():
            raise ReleaseError(f"release {version} of pool {self.name} is not staged; stage it first (src)")
        if version in view.failed:
            failed = view.failed[version]
            raise ReleaseError(
                f"release {version} of pool {self.name} is marked failed (at {failed.get('time')} by "
                f"{failed.get('user')}): it is never activated again; stage a new version"
            )
        current = self.current()
        if current == version:
            return False
        self.verify(version)
        self.actions.append(f"switch current from {current} to {version}" if current else f"set current to {version}")
        self._switch(version)
        self._record("activated", version=version, source=current, target=version, reason=reason)
        return True

    def verify(self, version: str) -> None:
        """Refuse a release whose files differ from what was staged: workers would run other code."""
        if version in self._would_stage:
            return
        recorded = (self.manifest(version) or {}).get("digest")
        found = content_digest(tree_entries(self.release_path(version)))
        if recorded != found:
            raise ReleaseError(
                f"release {version} of pool {self.name} changed on disk since it was staged "
                f"({recorded} recorded, {found} now): not switching to it; stage a new version"
            )

    def mark_failed(self, version: str, *, reason: str | None = None) -> bool:
        self.check_version(version)
        view = self.history()
        if version in view.failed:
            return False
        if version not in self.versions_on_disk() and version not in view.staged_at:
            raise ReleaseError(f"release {version} of pool {self.name} does not exist")
        self.actions.append(f"mark release {version} failed")
        self._record("failed", version=version, reason=reason)
        if self.current() == version:
            self.warnings.append(
                f"release {version} is marked failed but is still current: use state=rolled_back to switch away"
            )
        return True

    def rollback_target(self, version: str, *, to_version: str | None = None, view: HistoryView | None = None) -> str:
        """The release a rollback from ``version`` switches to, or ReleaseError saying why there is
        none. Cheap (no digest): a caller may ask before it stops anything."""
        view = view or self.history()
        complete = self.complete_versions()
        if to_version is not None:
            if to_version == version:
                raise ReleaseError(f"to_version {to_version} is the release being rolled back")
            if to_version not in complete:
                raise ReleaseError(f"to_version {to_version} is not a staged release of pool {self.name}")
            if to_version in view.failed:
                raise ReleaseError(f"to_version {to_version} is marked failed; it is never a rollback target")
            return to_version
        target = view.last_good_before(version, complete)
        if target is None:
            raise ReleaseError(
                f"no release of pool {self.name} was active before {version} and is still good and on "
                "disk; name one with to_version"
            )
        return target

    def rollback(self, version: str, *, to_version: str | None = None, reason: str | None = None) -> bool:
        """If ``version`` is current: mark it failed and switch to a good release. Else: nothing."""
        self.check_version(version)
        if to_version is not None:
            self.check_version(to_version)
        if self.current() != version:
            return False
        view = self.history()
        target = self.rollback_target(version, to_version=to_version, view=view)
        self.verify(target)
        why = reason or f"rolled back from {version}"
        if version not in view.failed:  # 1. mark failed (a re-run after a crash here skips it)
            self.actions.append(f"mark release {version} failed")
            self._record("failed", version=version, reason=why)
        self.actions.append(f"switch current from {version} to {target}")
        self._switch(target)  # 2. switch
        self._record("rolled_back", version=target, source=version, target=target, reason=why)  # 3. record
        return True

    def remove(self, version: str, *, reason: str | None = None) -> bool:
        self.check_version(version)
        if version not in self.versions_on_disk():
            return False
        current = self.current()
        if version == current:
            raise ReleaseError(f"release {version} is current; activate or roll back to another release first")
        if version == self.previous():
            raise ReleaseError(
                f"release {version} is the last good release before {current} (the rollback target); "
                "refusing to remove it"
            )
        self._delete(version, reason or "removed (state=absent)")
        return True

    def prune(self, keep: int, *, reason: str | None = None) -> list[str]:
        """Remove the releases older than the newest ``keep``; never the current one nor the last good one.

        Only releases older than the newest ``keep`` are candidates, so a release staged for the next
        deploy is never pruned because the current and last good ones are protected further back.
        """
        if keep < 0:
            raise ReleaseError(f"keep must be 0 or more, got {keep}")
        protected = {self.current(), self.previous()}
        ordered = [r.version for r in self.releases()]  # oldest first, by history
        candidates = ordered[: max(len(ordered) - keep, 0)]
        removed = []
        for version in candidates:
            if version in protected:
                continue
            self._delete(version, reason or f"pruned to keep {keep}")
            removed.append(version)
        return removed

    def record_queues(self, version: str, queues: list[str]) -> bool:
        """Keep the queues release ``version`` consumes in ``queues/<version>`` (one line, names apart by
        spaces): beside the release, not in it, so its content digest stays that of its code. The
        worker_release units read it whenever the release runs. False when it already says so."""
        path = self.queues_path(version)
        line = " ".join(queues) + "\n"
        try:
            with open(path, encoding="utf-8") as recorded:
                if recorded.read() == line:
                    return False
        except FileNotFoundError:
            pass
        self.actions.append(f"record the queues of release {version}: {', '.join(queues)}")
        if not self.check_mode:
            os.makedirs(self.queues_dir, exist_ok=True)
            atomic_write(path, line.encode())
        return True

    def _delete(self, version: str, reason: str) -> None:
        self.actions.append(f"remove release {version}")
        if self.check_mode:
            self._would_remove.add(version)
        else:
            doomed = tempfile.mkdtemp(prefix=f"{PRUNE_PREFIX}{version}-", dir=self.releases_dir)
            os.rename(self.release_path(version), os.path.join(doomed, version))  # never half a release
            fsync_dir(self.releases_dir)
            shutil.rmtree(doomed)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.queues_path(version))
        self._record("pruned", version=version, reason=reason)
