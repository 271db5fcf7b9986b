"""Sources of worker releases for tests: a small app tree per version."""

from __future__ import annotations

from pathlib import Path


def make_src(base: Path, version: str, extra: str = "") -> Path:
    src = base / f"src-{version}"
    (src / "app").mkdir(parents=True)
    (src / "app" / "tasks.py").write_text(f"RELEASE = {version!r}\n{extra}")
    (src / "run.sh").write_text("#!/bin/sh\nexec true\n")
    (src / "run.sh").chmod(0o755)
    return src
