# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One rule per kind of input, the same in every module: names, queues, counts and seconds.

``RULES`` maps an option name to its rule; ``module_kit.QueueopsModule`` applies the rule of every
option a module has, so ``pool``, ``queues``, ``keep`` or ``timeout`` mean the same everywhere.
Each rule returns the (normalised) value or raises ``InvalidInput`` with a message in words.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from ansible_collections.queueops.rollback.plugins.module_utils.identity import (
    NAME_MAX_BYTES,
    InvalidName,
    validate_name,
)

# A week: longer windows, timeouts and TTLs are typos (1e12 s also overflows the platform's time_t).
MAX_SECONDS = 7 * 24 * 3600
LABEL_MAX_CHARS = 200


class InvalidInput(InvalidName):
    """An option value no module accepts; the message says which option and why."""


def queue_name(value: Any, what: str = "queue") -> str:
    """A queue name: non-empty, no whitespace or control characters, at most NAME_MAX_BYTES of UTF-8.

    ``:`` and ``@`` are allowed (``<queue>@<version>`` is how a release's own queue is named).
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty queue name")
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        raise InvalidInput(f"{what} {value[:32]!r}... is longer than {NAME_MAX_BYTES} bytes in UTF-8")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(f"{what} {value!r} must not contain spaces or control characters")
    return value


def queue_names(values: Any, what: str = "queues") -> list[str]:
    """Queue names, each checked by ``queue_name``; a name given twice counts once."""
    if values is None:
        return []
    return list(dict.fromkeys(queue_name(v, f"{what} entry") for v in values))


_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@\\-]{1,255}")


def unit_names(values: Any, what: str = "units") -> list[str]:
    """systemd unit names (``orders.target``, ``orders@1.service``): systemd's own characters, not
    starting with ``-`` (they are passed to systemctl as arguments)."""
    if not isinstance(values, list) or not values:
        raise InvalidInput(f"{what} must be a non-empty list of systemd unit names")
    for value in values:
        if not isinstance(value, str) or not _UNIT_NAME.fullmatch(value) or value.startswith("-"):
            raise InvalidInput(f"{what} entry {value!r} is not a systemd unit name")
    return list(dict.fromkeys(values))


def label(value: Any, what: str) -> str:
    """A short free text that names something (a lease owner, a purpose): 1 to 200 characters, one line."""
    text = str(value).strip() if value is not None else ""
    if not text:
        raise InvalidInput(f"{what} must not be empty")
    if len(text) > LABEL_MAX_CHARS:
        raise InvalidInput(f"{what} is {len(text)} characters long, more than {LABEL_MAX_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput(f"{what} {text!r} contains a control character (a newline or tab among them)")
    return text


def count(minimum: int = 0, maximum: int | None = None) -> Callable[[Any, str], int]:
    def rule(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{what} must be a whole number, not {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else " or more"
            span = f"between {minimum}{upper}" if maximum is not None else f"{minimum}{upper}"
            raise InvalidInput(f"{what} must be {span}, not {value}")
        return value

    return rule


def seconds(*, above_zero: bool = False, maximum: float = MAX_SECONDS) -> Callable[[Any, str], float]:
    def rule(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInput(f"{what} must be a finite number of seconds, not {value!r}")
        if value < 0 or (above_zero and value == 0):
            raise InvalidInput(f"{what} must be {'more than 0' if above_zero else '0 or more'} seconds, not {value:g}")
        if value > maximum:
            raise InvalidInput(f"{what} must be at most {maximum:g} seconds ({maximum / 86400:g} days), not {value:g}")
        return value

    return rule


def ratio(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidInput(f"{what} must be between 0 and 1, not {value!r}")
    return float(value)


RULES: dict[str, Callable[[Any, str], Any]] = {
    "pool": validate_name,
    "version": validate_name,
    "to_version": validate_name,
    "good_release": validate_name,
    "bad_release": validate_name,
    "gate": validate_name,
    "owner": label,
    "purpose": label,
    "queues": queue_names,
    "from_queue": queue_name,
    "to_queue": queue_name,
    "units": unit_names,
    "keep": count(minimum=1),
    "limit": count(minimum=1),
    "max_files": count(minimum=1),
    "max_bytes": count(minimum=1),
    "min_tasks": count(minimum=0),
    "max_failures": count(minimum=0),
    "min_workers": count(minimum=0),
    "max_backlog_growth": count(minimum=0),
    "workers_expected": count(minimum=0),
    "max_failure_ratio": ratio,
    "percentage": count(minimum=0, maximum=100),
    "ttl": seconds(above_zero=True),
    "expires_in": seconds(above_zero=True),
    "timeout": seconds(),
    "stop_grace": seconds(),
    "lock_timeout": seconds(maximum=3600),
    "window": seconds(above_zero=True),
    "reply_timeout": seconds(above_zero=True, maximum=600),
    "settle_timeout": seconds(above_zero=True, maximum=3600),
    "ping_timeout": seconds(above_zero=True, maximum=600),
    "heartbeat_timeout": seconds(above_zero=True),
    "interval": seconds(above_zero=True, maximum=60),
    "duration": seconds(above_zero=True, maximum=86400),
}


def apply_rules(params: dict[str, Any], options: dict[str, Any]) -> None:
    """Check (and normalise) in place every option of ``options`` that has a rule and a value."""
    for name in options:
        rule = RULES.get(name)
        if rule is not None and params.get(name) is not None:
            params[name] = rule(params[name], name)
