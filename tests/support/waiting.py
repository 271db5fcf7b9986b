"""Poll instead of sleeping: tests wait exactly as long as the real thing takes."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.05) -> bool:
    """True as soon as ``predicate()`` is truthy, False once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
