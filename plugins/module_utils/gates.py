# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Feature gates of a pool: one hash in the pool's Redis, ``queueops:gates:<pool>``.

Each field is a gate's name; its value the JSON ``{"percentage", "release", "since", "expires_at"}``.
An absent field is a closed gate. The app reads the field and takes the new code path for a task when
the gate is open (``expires_at`` not passed) and ``crc32("<gate>:<task key>") % 100 < percentage``
(``takes_new_path``), so a task key gets the same answer from every worker. Closing is deleting the
field: the next read of every worker sees it, with no restart, which makes it the fastest rollback.

Changes are made in one transaction on the hash (``WATCH``), so two writers never interleave.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.events import record_or_warn
from ansible_collections.queueops.rollback.plugins.module_utils.identity import as_text

GATES_PREFIX = "queueops:gates:"


def gates_key(pool: str) -> str:
    return f"{GATES_PREFIX}{pool}"


def takes_new_path(gate: dict[str, Any] | None, name: str, key: str, now: float | None = None) -> bool:
    """Whether the task keyed ``key`` takes the new path of gate ``name`` (``gate`` as ``read`` gives it)."""
    if not gate or is_expired(gate, time.time() if now is None else now):
        return False
    return zlib.crc32(f"{name}:{key}".encode()) % 100 < int(gate.get("percentage", 0))


def is_expired(gate: dict[str, Any], now: float) -> bool:
    expires_at = gate.get("expires_at")
    return expires_at is not None and float(expires_at) <= now


def decode(raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored gate, or None when absent or not ours (a value that is not a JSON object)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read(client, pool: str) -> dict[str, dict[str, Any]]:
    """Every gate of ``pool`` as stored, expired ones included (``describe`` says which). A value that
    is not ours reads as an empty gate: closed, and closing it removes it."""
    return {as_text(name): decode(raw) or {} for name, raw in client.hgetall(gates_key(pool)).items()}


def describe(name: str, gate: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """What the module returns for a gate: open or not, to what share, since when, until when."""
    gate = gate or {}
    expires_at = gate.get("expires_at")
    expired = is_expired(gate, now)
    percentage = 0 if expired else int(gate.get("percentage", 0))
    return {
        "name": name,
        "open": percentage > 0,
        "percentage": percentage,
        "release": gate.get("release"),
        "since": gate.get("since"),
        "expires_in": None if expires_at is None or expired else round(float(expires_at) - now, 3),
        "expired": expired,
    }


@dataclass
class GateChange:
    """What a call changed (or, in check mode, would change)."""

    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.closed)


def open_gate(
    client,
    pool: str,
    name: str,
    *,
    percentage: int,
    release: str | None,
    expires_in: float | None,
    check_mode: bool,
) -> GateChange:
    """Open gate ``name`` to ``percentage`` of tasks. A gate already open as asked is left as it is: its
    expiry is not pushed back, so re-running a play does not keep a temporary gate open for ever. An
    expired gate is opened again. ``percentage`` 0 closes it."""
    if percentage == 0:
        return close_gates(client, pool, names=[name], release=None, check_mode=check_mode)

    def change(pipe) -> GateChange:
        now = time.time()
        before = decode(pipe.hget(gates_key(pool), name))
        same = (
            before is not None
            and not is_expired(before, now)
            and int(before.get("percentage", -1)) == percentage
            and before.get("release") == release
            and (expires_in is not None) == (before.get("expires_at") is not None)
        )
        if same:
            return GateChange({name: before}, {name: before})
        after = {
            "percentage": percentage,
            "release": release,
            "since": before["since"] if before and not is_expired(before, now) and before.get("since") else now,
            "expires_at": None if expires_in is None else now + expires_in,
        }
        if not check_mode:
            pipe.multi()
            pipe.hset(gates_key(pool), name, json.dumps(after, sort_keys=True))
        return GateChange({name: before} if before else {}, {name: after}, opened=[name])

    return client.transaction(change, gates_key(pool), value_from_callable=True)


def close_gates(client, pool: str, *, names: list[str] | None, release: str | None, check_mode: bool) -> GateChange:
    """Close the gates ``names`` (all of them when None), or those opened by ``release``, or both filters.
    Closing a closed gate changes nothing; an expired gate is closed too (it is already closed for the app)
    and is reported among ``closed``."""

    def change(pipe) -> GateChange:
        current = read(pipe, pool)
        chosen = [
            name
            for name, gate in sorted(current.items())
            if (names is None or name in names) and (release is None or gate.get("release") == release)
        ]
        if chosen and not check_mode:
            pipe.multi()
            pipe.hdel(gates_key(pool), *chosen)
        return GateChange({name: current[name] for name in chosen}, {}, closed=chosen)

    return client.transaction(change, gates_key(pool), value_from_callable=True)


def record_change(module, client, module_name: str, pool: str, change: GateChange, release: str | None) -> None:
    """One event per gate opened or closed (``gate opened`` / ``gate closed``), none in check mode."""
    if module.check_mode:
        return
    for name in change.opened:
        gate = change.after[name]
        record_or_warn(module, client, module_name, "gate opened", pool=pool, gate=name,
                       percentage=gate["percentage"], release=gate["release"],
                       since=gate["since"], expires_at=gate["expires_at"])  # fmt: skip
    for name in change.closed:
        record_or_warn(module, client, module_name, "gate closed", pool=pool, gate=name, release=release)
