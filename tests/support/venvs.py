"""Extra virtualenvs the tests need (another RQ major, for instance), built once under .cache/venvs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .buildlock import build_lock
from .paths import REPO

VENVS = REPO / ".cache" / "venvs"


def venv_with(name: str, requirements: list[str]) -> Path:
    """A virtualenv at .cache/venvs/NAME with exactly these pinned requirements; reused when unchanged."""
    path = VENVS / name
    with build_lock(path):
        return _build(path, requirements)


def _build(path: Path, requirements: list[str]) -> Path:
    stamp = path / ".requirements.sha256"
    want = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return path
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *requirements],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stamp.write_text(want)
    return path
