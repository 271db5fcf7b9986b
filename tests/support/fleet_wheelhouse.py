"""The fleet's wheelhouse: the sample app's releases, RQ, Celery and psycopg with every dependency.

``.cache/wheelhouse/fleet/`` is what the deploy roles copy to the worker hosts and install each
release's virtualenv from with no index::

    pip install --no-index --find-links <wheelhouse> sampleapp==<version> rq==2.12.0 'celery[redis]==5.5.3'

The sample app's wheels are written here (tests/support/sample_wheels.py); the others come from
``pip wheel -c requirements-dev.txt`` (pip's own configuration picks the index). The worker hosts
run the controller's Python (Debian bookworm's 3.11), so the wheels pip picks here fit them. Built
once and reused while its inputs are unchanged (a stamp holds their hashes); a change to the
sample app rebuilds only its wheels. One builder at a time (parallel pytest workers).

CLI: ``python -m tests.support.fleet_wheelhouse [DIR]`` builds (or reuses) it and prints its size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import sample_wheels
from .buildlock import build_lock
from .paths import REPO
from .wheelhouse import WHEELHOUSES

FLEET = WHEELHOUSES / "fleet"
FRAMEWORKS = ["rq==2.12.0", "celery[redis]==5.5.3"]
# The sample app's extra "postgres" (its transactional task, sampleapp/store.py), which the faults
# fleets install.
POSTGRES = ["psycopg[binary]==3.3.9"]
# Wheels the worker hosts need although the controller does not: Debian bookworm's Python is
# 3.11.2, and redis-py needs async-timeout below 3.11.3.
HOST_ONLY = ["async-timeout==5.0.1"]
CONSTRAINTS = REPO / "requirements-dev.txt"
STAMP = ".inputs.json"


def release_requirements(version: str) -> list[str]:
    """What a release's virtualenv installs from the fleet wheelhouse."""
    if version not in sample_wheels.RELEASES:
        raise KeyError(f"no sample release {version}; there are {', '.join(sample_wheels.VERSIONS)}")
    return [f"{sample_wheels.NAME}=={version}", *FRAMEWORKS]


def fleet_wheelhouse(path: Path = FLEET) -> Path:
    """The wheelhouse at ``path``, built if missing or if its inputs changed."""
    with build_lock(path):
        return _build(path)


def _dependencies_digest() -> str:
    python = f"{sys.implementation.name}{sys.version_info.major}{sys.version_info.minor}"
    return hashlib.sha256(
        "\n".join([python, *sorted(FRAMEWORKS + POSTGRES + HOST_ONLY)]).encode() + b"\0" + CONSTRAINTS.read_bytes()
    ).hexdigest()


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def _build(path: Path) -> Path:
    want = {"dependencies": _dependencies_digest(), "sampleapp": sample_wheels.inputs_digest()}
    have = _read_stamp(path)
    if have == want:
        return path
    if have.get("dependencies") != want["dependencies"]:
        _build_dependencies(path)
    for old in path.glob(f"{sample_wheels.NAME}-*.whl"):
        old.unlink()
    sample_wheels.build_all(path)
    (path / STAMP).write_text(json.dumps(want, sort_keys=True) + "\n")
    return path


def _build_dependencies(path: Path) -> None:
    """``pip wheel`` into a fresh directory beside ``path``, then swapped in: never half a wheelhouse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{path.name}.build-", dir=path.parent))
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--disable-pip-version-check",
                "--no-input",
                "-w",
                str(fresh),
                "-c",
                str(CONSTRAINTS),
                *FRAMEWORKS,
                *POSTGRES,
                *HOST_ONLY,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pip wheel {' '.join(FRAMEWORKS)} failed (exit {proc.returncode}):\n{proc.stderr}")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            fresh.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            fresh.rename(path)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def describe(path: Path) -> str:
    wheels = sorted(p for p in path.iterdir() if p.suffix == ".whl")
    size = sum(p.stat().st_size for p in wheels)
    return f"{path}: {len(wheels)} wheels, {size / 1e6:.1f} MB\n" + "".join(f"  {p.name}\n" for p in wheels)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print(f"usage: python -m tests.support.fleet_wheelhouse [DIR]   (default {FLEET})", file=sys.stderr)
        return 2
    path = Path(args[0]).resolve() if args else FLEET
    started = time.monotonic()
    fleet_wheelhouse(path)
    print(describe(path), end="")
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
