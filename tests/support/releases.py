"""Sources of worker releases for tests: a small app tree per version."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.queueops.rollback.plugins.module_utils.releases import Pool, Source


def make_src(base: Path, version: str, extra: str = "") -> Path:
    src = base / f"src-{version}"
    (src / "app").mkdir(parents=True)
    (src / "app" / "tasks.py").write_text(f"RELEASE = {version!r}\n{extra}")
    (src / "run.sh").write_text("#!/bin/sh\nexec true\n")
    (src / "run.sh").chmod(0o755)
    return src


def staged_pool(tmp_path: Path, *versions: str, activate: tuple[str, ...] = ()) -> Pool:
    """Pool ``orders`` under ``tmp_path/root`` with these versions staged, then these activated in order."""
    pool = Pool(str(tmp_path / "root"), "orders", user="tester")
    for version in versions:
        assert pool.stage(version, Source(code=str(make_src(tmp_path, version))))
    for version in activate:
        pool.activate(version)
    return pool
