# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet-wide lease of a pool: one run at a time deploys or rolls back a pool, whatever its hosts.

The per-pool file lock of ``releases`` stops two runs on one host; two controllers deploying the
same pool to different hosts would still mix releases. The lease is one Redis key per pool,
``queueops:lease:<pool>``, holding who owns it (the run's owner id), what for, since when, and an
expiry (``PEXPIRE``) so a controller that dies cannot hold the pool for ever. Every change is one
Lua script, so two controllers that race cannot both win.

An owner id made by ``run_owner`` names the controller host and the ansible-playbook process
(pid and start time). A lease whose owner is a process of *this* host that no longer runs is stale:
the controller was killed mid-run, and the run that re-runs the rollback there takes it over (and
says so). A lease of another host is only taken with ``force`` (an operator who knows that run is
dead), or once it expires.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.queueops.rollback.plugins.module_utils.identity import as_text

LEASE_PREFIX = "queueops:lease:"

# KEYS[1] lease key; ARGV: owner, record (JSON), ttl ms, mode (acquire | force | takeover), stale owner.
# Returns {outcome, previous record or ""}: outcome is acquired | renewed | held.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return {'acquired', ''}
end
local ok, held = pcall(cjson.decode, current)
local owner = ok and type(held) == 'table' and held['owner'] or ''
if owner == ARGV[1] then
  local record = cjson.decode(ARGV[2])
  record['since'] = held['since'] or record['since']
  redis.call('SET', KEYS[1], cjson.encode(record), 'PX', ARGV[3])
  return {'renewed', current}
end
if ARGV[4] == 'force' or (ARGV[4] == 'takeover' and owner == ARGV[5]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return {'acquired', current}
end
return {'held', current}
"""

# KEYS[1] lease key; ARGV: owner, force ("1" or "0"). Returns {outcome, previous record or ""}:
# released | absent | held.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return {'absent', ''} end
local ok, held = pcall(cjson.decode, current)
local owner = ok and type(held) == 'table' and held['owner'] or ''
if owner == ARGV[1] or ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
  return {'released', current}
end
return {'held', current}
"""


class LeaseHeld(Exception):
    """The pool's lease belongs to another run; the message names it and when it expires."""


def lease_key(pool: str) -> str:
    return f"{LEASE_PREFIX}{pool}"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def run_owner(label: str | None = None) -> str:
    """The owner id of the ansible-playbook run this code runs in: ``<host>/<pid>.<start>[ <label>]``.

    Ansible templates in its main process and in forked workers; in a worker, the run is its parent.
    """
    in_worker = multiprocessing.current_process().name != "MainProcess"
    pid = os.getppid() if in_worker else os.getpid()
    owner = f"{socket.gethostname()}/{pid}.{_process_start(pid) or 0}"
    return f"{owner} {label}" if label else owner


def stale_here(owner: str) -> bool:
    """Whether ``owner`` names a process of this host that no longer runs (the controller died)."""
    host, _, rest = owner.partition("/")
    ident = rest.split(" ", 1)[0]
    pid, _, start = ident.partition(".")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _process_start(int(pid)) != start


@dataclass
class LeaseOutcome:
    changed: bool
    state: str  # acquired | renewed | released | absent | held
    lease: dict[str, Any] | None
    previous: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def _decoded(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    raw = as_text(raw)
    try:
        record = json.loads(raw)
    except ValueError:
        return {"owner": "", "unreadable": raw[:200]}
    return record if isinstance(record, dict) else {"owner": "", "unreadable": raw[:200]}


def read(client, pool: str) -> dict[str, Any] | None:
    """The lease of ``pool`` as stored, with ``expires_in`` (seconds, None without expiry); None when free."""
    key = lease_key(pool)
    pipe = client.pipeline(transaction=True)
    pipe.get(key)
    pipe.pttl(key)
    raw, pttl = pipe.execute()
    record = _decoded(raw)
    if record is not None:
        record["expires_in"] = round(pttl / 1000, 1) if pttl and pttl > 0 else None
    return record


def describe(record: dict[str, Any]) -> str:
    """One line naming who holds a lease, what for, since when and when it expires."""
    if record.get("unreadable"):
        return f"an unreadable lease ({record['unreadable']!r})"
    since = record.get("since")
    age = f", for {time.time() - float(since):.0f} s" if since else ""
    expires = record.get("expires_in")
    expiry = f", expires in {expires:.0f} s" if expires is not None else ", no expiry"
    purpose = f" ({record['purpose']})" if record.get("purpose") else ""
    return f"{record.get('owner') or 'an unknown owner'}{purpose}{age}{expiry}"


def acquire(
    client,
    pool: str,
    owner: str,
    *,
    ttl: float,
    purpose: str | None = None,
    force: bool = False,
    check_mode: bool = False,
) -> LeaseOutcome:
    """Take (or renew, when ``owner`` holds it) the lease of ``pool`` for ``ttl`` seconds.

    Raises ``LeaseHeld`` when another run holds it, unless that run was a process of this host that
    no longer runs (taken over, with a warning) or ``force``.
    """
    current = read(client, pool)
    mode, stale, warnings = "acquire", "", []
    if current is not None and current.get("owner") != owner:
        if force:
            mode = "force"
            warnings.append(f"took the lease of pool {pool} by force from {describe(current)}")
        elif current.get("owner") and stale_here(current["owner"]):
            mode, stale = "takeover", current["owner"]
            warnings.append(
                f"took over the lease of pool {pool} from {describe(current)}: that run's process no longer runs"
            )
        else:
            raise LeaseHeld(
                f"pool {pool} is leased to another run: {describe(current)}; wait for it to end, or, if that"
                " run is dead, let the lease expire or take it with force"
            )
    record = {"owner": owner, "purpose": purpose or "", "since": round(time.time(), 2), "host": socket.gethostname()}
    if check_mode:
        state = "renewed" if current is not None and current.get("owner") == owner else "acquired"
        return LeaseOutcome(state == "acquired", state, {**record, "expires_in": ttl}, current, warnings)
    outcome, previous = client.eval(
        _ACQUIRE, 1, lease_key(pool), owner, json.dumps(record), int(ttl * 1000), mode, stale
    )
    outcome = as_text(outcome)
    if outcome == "held":  # another run won the race between the read and the script
        raise LeaseHeld(f"pool {pool} is leased to another run: {describe(read(client, pool) or {})}")
    return LeaseOutcome(outcome == "acquired", outcome, read(client, pool), _decoded(previous) or current, warnings)


def release(client, pool: str, owner: str, *, force: bool = False, check_mode: bool = False) -> LeaseOutcome:
    """Give the lease of ``pool`` back. Releasing a free pool does nothing; another run's lease is
    refused (``LeaseHeld``) unless ``force``."""
    current = read(client, pool)
    if current is None:
        return LeaseOutcome(False, "absent", None, None)
    if current.get("owner") != owner and not force:
        raise LeaseHeld(f"pool {pool} is leased to another run, not released: {describe(current)}")
    warnings = [] if current.get("owner") == owner else [f"released by force the lease of {describe(current)}"]
    if check_mode:
        return LeaseOutcome(True, "released", None, current, warnings)
    outcome, previous = client.eval(_RELEASE, 1, lease_key(pool), owner, "1" if force else "0")
    outcome = as_text(outcome)
    if outcome == "held":
        raise LeaseHeld(f"pool {pool} is leased to another run, not released: {describe(read(client, pool) or {})}")
    return LeaseOutcome(outcome == "released", outcome, None, _decoded(previous) or current, warnings)
