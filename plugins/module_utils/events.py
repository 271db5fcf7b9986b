# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared event stream: every mutating module appends what it did to ``queueops:events``."""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from typing import Any

EVENTS_STREAM = "queueops:events"
EVENTS_MAXLEN = 10_000


def actor() -> str:
    """Who acts: the AWX / ansible-runner user when known, else the login user."""
    for variable in ("AWX_USER", "ANSIBLE_RUNNER_USER", "SUDO_USER"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def event_fields(module: str, action: str, **details: Any) -> dict[str, str]:
    """Flat string fields for XADD; nested details are JSON encoded."""
    fields = {
        "time": f"{time.time():.6f}",
        "module": module,
        "action": action,
        "user": actor(),
        "host": socket.gethostname(),
    }
    for key, value in details.items():
        if value is None:
            continue
        fields[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return fields


def record_event(client, module: str, action: str, **details: Any) -> str | None:
    """Append an event to the capped stream; returns its id, or None if Redis refused it.

    Recording never fails the work it records: modules call ``record_or_warn``, which warns instead.
    """
    try:
        event_id = client.xadd(
            EVENTS_STREAM, event_fields(module, action, **details), maxlen=EVENTS_MAXLEN, approximate=True
        )
    except Exception:  # noqa: BLE001 - the event log is best effort by design
        return None
    return event_id.decode() if isinstance(event_id, bytes) else event_id


def record_or_warn(module, client, module_name: str, action: str, **details: Any) -> str | None:
    """``record_event`` for a module: when the event cannot be written, the run warns and goes on."""
    event_id = record_event(client, module_name, action, **details)
    if event_id is None:
        module.warn(f"could not record the {action} event in the {EVENTS_STREAM} stream")
    return event_id
