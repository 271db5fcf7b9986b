"""The sample app's releases as real wheels, written with zipfile: no build backend, no network.

A pure-Python wheel is a zip of the package and a ``<name>-<version>.dist-info`` directory
(METADATA, WHEEL, entry_points.txt, RECORD). Every release is the code of
tests/fixtures/app/sampleapp with its own ``release.py``:

- 1.0.0 good;
- 1.1.0 good, reads one new configuration key, SAMPLEAPP_GREETING, refuses to start without it and
  records it in the ledger's start entries;
- 1.2.0 bad: fails the tokens with ``crc32(token) % 3 == 0`` (a replay on a good release succeeds);
- 1.3.0 cannot start: its worker entry points raise ImportError before the worker registers.
- 1.2.1 and 1.7.0 bad like 1.2.0, and 1.4.0, 1.5.0, 1.6.0 good like 1.1.0: the scenarios that take
  more releases than these four (a release marked failed is never a target again).
- 1.8.0 good on its old code path; its new path, behind the feature gate ``new_totals``, fails like
  1.2.0 (the tokens with ``crc32(token) % 3 == 0``): a bad change a gate flip takes back.
- 1.9.0 bad like 1.2.0, and it introduces the task type ``totals``, which new code sends to the
  release's own queue ``<queue>@1.9.0``; 1.9.1 good, runs ``totals`` too: the fix that takes over
  what waits on ``<queue>@1.9.0`` once 1.9.0 was rolled back (versioned routing).

The wheels are reproducible (fixed timestamps and modes, sorted members): the same sources give
the same bytes, so a release's identity (the wheelhouse listing it was built from) is stable.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .paths import SAMPLE_APP

NAME = "sampleapp"
PACKAGE = SAMPLE_APP / NAME
TAG = "py3-none-any"
GREETING = "SAMPLEAPP_GREETING"
NEW_TOTALS = "new_totals"  # the feature gate of 1.8.0's new code path
TOTALS = "totals"  # the task type 1.9.0 introduces (versioned routing)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


@dataclass(frozen=True)
class SampleRelease:
    version: str
    summary: str
    fail_every: int = 0
    required_env: tuple[str, ...] = ()
    startup_imports: tuple[str, ...] = ()
    gates: tuple[tuple[str, int], ...] = ()  # gate -> fail_every of its new path
    tasks: tuple[str, ...] = ()  # task types beyond work (sampleapp/routing.py)

    @property
    def wheel_name(self) -> str:
        return f"{NAME}-{self.version}-{TAG}.whl"

    def release_py(self) -> str:
        return (
            f"# sampleapp {self.version}: {self.summary}\n"
            "# Written by tests/support/sample_wheels.py; SAMPLEAPP_RELEASE and SAMPLEAPP_FAIL_EVERY still win.\n"
            f"VERSION = {self.version!r}\n"
            f"FAIL_EVERY = {self.fail_every!r}\n"
            f"REQUIRED_ENV: tuple[str, ...] = {self.required_env!r}\n"
            f"STARTUP_IMPORTS: tuple[str, ...] = {self.startup_imports!r}\n"
            f"GATES: dict[str, int] = {dict(self.gates)!r}\n"
            f"TASKS: tuple[str, ...] = {self.tasks!r}\n"
        )


RELEASES: dict[str, SampleRelease] = {
    r.version: r
    for r in (
        SampleRelease("1.0.0", "good"),
        SampleRelease("1.1.0", f"good; reads {GREETING} and refuses to start without it", required_env=(GREETING,)),
        SampleRelease("1.2.0", "bad: fails every task whose crc32(token) % 3 == 0", fail_every=3),
        SampleRelease(
            "1.3.0",
            "cannot start: the worker imports a name its package lacks",
            startup_imports=("sampleapp.ledger:record_refund",),
        ),
        # A release marked failed is never activated again: the scenarios that break more than one
        # deploy in a row take these.
        SampleRelease("1.2.1", "bad, like 1.2.0", fail_every=3),
        SampleRelease("1.4.0", "good; reads SAMPLEAPP_GREETING", required_env=(GREETING,)),
        SampleRelease("1.5.0", "good; reads SAMPLEAPP_GREETING", required_env=(GREETING,)),
        SampleRelease("1.6.0", "good; reads SAMPLEAPP_GREETING", required_env=(GREETING,)),
        SampleRelease("1.7.0", "bad, like 1.2.0", fail_every=3),
        SampleRelease(
            "1.8.0",
            f"good; its new path behind the gate {NEW_TOTALS} fails like 1.2.0; reads SAMPLEAPP_GREETING",
            required_env=(GREETING,),
            gates=((NEW_TOTALS, 3),),
        ),
        SampleRelease(
            "1.9.0",
            f"bad like 1.2.0; introduces the task type {TOTALS}, sent to its own queue <queue>@1.9.0",
            fail_every=3,
            required_env=(GREETING,),
            tasks=(TOTALS,),
        ),
        SampleRelease(
            "1.9.1",
            f"good; runs {TOTALS} (sent to <queue>@1.9.1) and takes what waits on <queue>@1.9.0",
            required_env=(GREETING,),
            tasks=(TOTALS,),
        ),
    )
}
VERSIONS = tuple(RELEASES)

ENTRY_POINTS = (
    "[console_scripts]\n"
    "sampleapp-celery-worker = sampleapp.entry:celery_worker\n"
    "sampleapp-rq-worker = sampleapp.entry:rq_worker\n"
)


def source_files() -> dict[str, bytes]:
    """The package's files as the wheels carry them (``sampleapp/<name>.py``), release.py included."""
    return {f"{NAME}/{path.name}": path.read_bytes() for path in sorted(PACKAGE.glob("*.py"))}


def _metadata(release: SampleRelease) -> str:
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {NAME}\n"
        f"Version: {release.version}\n"
        f"Summary: queueops sample worker app {release.version}: {release.summary}\n"
        "Requires-Python: >=3.9\n"
        "Requires-Dist: redis>=4\n"
        "Provides-Extra: rq\n"
        'Requires-Dist: rq>=2; extra == "rq"\n'
        "Provides-Extra: celery\n"
        'Requires-Dist: celery[redis]>=5.5; extra == "celery"\n'
        "Provides-Extra: postgres\n"
        'Requires-Dist: psycopg[binary]>=3.1; extra == "postgres"\n'
    )


def _wheel_file() -> str:
    return (
        f"Wheel-Version: 1.0\nGenerator: queueops tests/support/sample_wheels.py\nRoot-Is-Purelib: true\nTag: {TAG}\n"
    )


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def wheel_members(release: SampleRelease) -> dict[str, bytes]:
    """Every member of the release's wheel, RECORD last, in the order they are written."""
    dist_info = f"{NAME}-{release.version}.dist-info"
    members = source_files()
    members[f"{NAME}/release.py"] = release.release_py().encode()
    members = dict(sorted(members.items()))
    members[f"{dist_info}/METADATA"] = _metadata(release).encode()
    members[f"{dist_info}/WHEEL"] = _wheel_file().encode()
    members[f"{dist_info}/entry_points.txt"] = ENTRY_POINTS.encode()
    record = "".join(_record_line(path, data) for path, data in members.items()) + f"{dist_info}/RECORD,,\n"
    members[f"{dist_info}/RECORD"] = record.encode()
    return members


def build_wheel(release: SampleRelease, directory: Path) -> Path:
    """Write ``sampleapp-<version>-py3-none-any.whl`` into ``directory``; the same input gives the same bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / release.wheel_name
    partial = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in wheel_members(release).items():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    partial.replace(path)
    return path


def build_all(directory: Path) -> list[Path]:
    return [build_wheel(release, directory) for release in RELEASES.values()]


def inputs_digest() -> str:
    """What the wheels are made of: the package's sources and this builder."""
    digest = hashlib.sha256()
    for name, data in [*source_files().items(), ("builder", Path(__file__).read_bytes())]:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()
