# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names: what a pool or version may be called, and how a worker's name carries its release.

Worker identity convention (the roles follow it, the health gate and replay rely on it):
an RQ worker's ``--name`` and a Celery worker's node name (the part before ``@`` of ``-n``) are
``<pool>:<version>:<index>``, e.g. ``orders:2.4.1:3`` (RQ) or ``orders:2.4.1:3@web-1`` (Celery).
So every failure and every heartbeat can be attributed to a pool and a release.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

NAME_MAX_LENGTH = 128
# A name becomes a directory name, also inside longer temporary names: stay well below 255 bytes.
NAME_MAX_BYTES = 200
_SEPARATOR = ":"
_FORBIDDEN_IN_IDENTITY = (":", "@")


def as_text(value: Any) -> str:
    """Redis replies (bytes), None and other values as text; undecodable bytes are replaced."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


class InvalidName(ValueError):
    """A pool or version name that could escape a directory or break the worker identity."""


def validate_name(value: object, what: str) -> str:
    """Return ``value`` if it is safe as a single path component and identity field, else raise.

    Refused: empty, ``.``/``..`` or any ``..`` sequence, ``/`` or ``\\``, NUL and other control
    characters, ``:`` and ``@`` (they delimit the worker identity), leading ``-`` or ``.``, and more
    than NAME_MAX_LENGTH characters or NAME_MAX_BYTES bytes of UTF-8.
    """
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} must be a non-empty string")
    if len(value) > NAME_MAX_LENGTH:
        raise InvalidName(f"{what} {value[:32]!r}... is longer than {NAME_MAX_LENGTH} characters")
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        raise InvalidName(f"{what} {value[:32]!r}... is longer than {NAME_MAX_BYTES} bytes in UTF-8")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidName(f"{what} {value!r} contains a control character")
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidName(f"{what} {value!r} must not contain '/', '\\' or '..'")
    for ch in _FORBIDDEN_IN_IDENTITY:
        if ch in value:
            raise InvalidName(f"{what} {value!r} must not contain {ch!r} (it delimits worker names)")
    if value[0] in "-." or value.strip() != value:
        raise InvalidName(f"{what} {value!r} must not start with '-' or '.' or have surrounding spaces")
    return value


class WorkerIdentity(NamedTuple):
    pool: str
    version: str
    index: str


def worker_name(pool: str, version: str, index: int | str) -> str:
    """The RQ worker name, or the Celery node name without ``@host``."""
    return _SEPARATOR.join((validate_name(pool, "pool"), validate_name(version, "version"), str(index)))


def parse_worker_name(name: str | bytes) -> WorkerIdentity | None:
    """Pool, version and index from an RQ worker name or a Celery hostname; None if not ours."""
    node = as_text(name).split("@", 1)[0]
    parts = node.split(_SEPARATOR)
    if len(parts) != 3 or not all(parts):
        return None
    return WorkerIdentity(*parts)


def worker_matches(
    name: str | bytes, *, pool: str | None = None, version: str | None = None, pattern: str | None = None
) -> bool:
    """Whether a worker belongs to a pool and/or release, or matches a shell-style name pattern."""
    name = as_text(name)
    if pattern is not None:
        from fnmatch import fnmatchcase

        return fnmatchcase(name, pattern) or fnmatchcase(name.split("@", 1)[0], pattern)
    identity = parse_worker_name(name)
    if identity is None:
        return False
    return (pool is None or identity.pool == pool) and (version is None or identity.version == version)


_VERSION_SORT = re.compile(r"(\d+)")


def version_sort_key(version: str) -> list:
    """Natural order for display only (1.10 after 1.9); history, never this, picks rollback targets."""
    return [int(part) if part.isdigit() else part for part in _VERSION_SORT.split(version)]


GLOB_CHARS = frozenset("*?[")  # what makes a name a shell-style pattern


def release_selector(spec: str, pool: str | None = None):
    """A predicate over worker names for ``spec``: a release version, or a shell-style name pattern.

    ``spec`` with ``*``, ``?`` or ``[`` is a pattern on the whole name (``orders:2.4.*``, ``*@web-1``);
    otherwise it is a version, and the worker must follow the identity convention with that version
    (and ``pool`` when given). Used by the health gate and replay to attribute work to a release.
    """
    if GLOB_CHARS.intersection(spec):
        return lambda name: worker_matches(name, pattern=spec)
    return lambda name: worker_matches(name, pool=pool, version=spec)


def release_spec_problem(option: str, spec: str | None, pool: str | None = None) -> str | None:
    """Why a release spec can match no worker at all, in words; None when it is usable.

    A spec without ``*``, ``?`` or ``[`` is a version, compared with the middle field of
    ``<pool>:<version>:<index>``: with a ``:`` or ``@`` in it, it never matches (``shop:2.0.0``).
    """
    if pool and (":" in pool or "@" in pool):
        return f"pool {pool!r} cannot contain ':' or '@' (worker names are <pool>:<version>:<index>)"
    if not spec or GLOB_CHARS.intersection(spec) or not (":" in spec or "@" in spec):
        return None
    return (
        f"{option} {spec!r} would match no worker: a version cannot contain ':' or '@' (worker names are "
        "<pool>:<version>:<index>); give the version and set pool, or a pattern such as 'orders:2.4.1:*'"
    )


# Versioned routing: a release that introduces task types gets a queue of its own per pool queue,
# ``<queue>@<version>`` (``orders@1.9.0``). Its workers consume it beside the pool's queues, and new
# code sends the new task types there. When the release is rolled back, what waits on it stays
# parked - no older worker consumes it - until a release that can run those tasks consumes it too,
# or an operator moves it (task_requeue source=queue).
RELEASE_QUEUE_SEPARATOR = "@"


def release_queue(queue: str, version: str) -> str:
    """The queue of release ``version`` for pool queue ``queue``: ``<queue>@<version>``."""
    return f"{queue}{RELEASE_QUEUE_SEPARATOR}{validate_name(version, 'version')}"


def parse_release_queue(name: str | bytes) -> tuple[str, str] | None:
    """(pool queue, version) of a release queue name; None for a queue that is not one."""
    base, separator, version = as_text(name).rpartition(RELEASE_QUEUE_SEPARATOR)
    if not separator or not base:
        return None
    try:
        return base, validate_name(version, "version")
    except InvalidName:
        return None


def release_queues_of(queue: str, names) -> dict[str, str]:
    """Of queue ``names``, the release queues of pool queue ``queue``: version -> queue name."""
    found = {}
    for name in names:
        parsed = parse_release_queue(name)
        if parsed and parsed[0] == queue:
            found[parsed[1]] = as_text(name)
    return dict(sorted(found.items(), key=lambda item: version_sort_key(item[0])))
