"""A wheelhouse (a directory of wheels) for offline release builds, made once under .cache/wheelhouse.

Release virtualenvs are installed with ``pip install --no-index --find-links <wheelhouse>``, the
way a controller ships wheels to hosts that cannot reach an index. The wheelhouse is rebuilt only
when the requested requirements change.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .buildlock import build_lock
from .paths import REPO

WHEELHOUSES = REPO / ".cache" / "wheelhouse"
RQ_REQUIREMENTS = ["rq==2.12.0"]


def wheelhouse_with(name: str, requirements: list[str]) -> Path:
    """Wheels for ``requirements`` and their dependencies, pinned by requirements-dev.txt; reused when unchanged."""
    path = WHEELHOUSES / name
    with build_lock(path):
        return _build(path, requirements)


def _build(path: Path, requirements: list[str]) -> Path:
    stamp = path / ".requirements.sha256"
    constraints = (REPO / "requirements-dev.txt").read_bytes()
    want = hashlib.sha256("\n".join(sorted(requirements)).encode() + constraints).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return path
    path.mkdir(parents=True, exist_ok=True)
    for old in path.iterdir():
        old.unlink()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(path),
            "-c",
            str(REPO / "requirements-dev.txt"),
            *requirements,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stamp.write_text(want)
    return path


def rq_wheelhouse() -> Path:
    return wheelhouse_with("rq-2.12.0", RQ_REQUIREMENTS)
