"""Releases built from a wheelhouse: a virtualenv of their own, installed with no package index."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import read_jsonl
from ansible_collections.queueops.rollback.plugins.module_utils.releases import Pool, ReleaseError, Source
from tests.support.paths import SAMPLE_APP
from tests.support.runner import run_module
from tests.support.wheelhouse import rq_wheelhouse


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    return rq_wheelhouse()


def test_wheelhouse_release_has_a_working_venv_after_the_rename(tmp_path, wheelhouse):
    pool = Pool(str(tmp_path / "root"), "orders")
    source = Source(code=str(SAMPLE_APP), wheelhouse=str(wheelhouse), requirements=["rq==2.12.0"])
    assert pool.stage("1.0", source)
    release = Path(pool.release_path("1.0"))
    python = release / "venv" / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import rq, sampleapp; print(rq.__version__)"],
        cwd=release,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "2.12.0"
    # console scripts name the venv's final path, not the build directory they were installed in (pip
    # writes it in the shebang, or in a /bin/sh trampoline when the path is longer than a shebang allows)
    rq_script = release / "venv" / "bin" / "rq"
    head = rq_script.read_text().splitlines()[:2]
    final_python = f"{release}/venv/bin/python"
    assert head[0] == f"#!{final_python}" or (head[0] == "#!/bin/sh" and f"'exec' {final_python} " in head[1]), head
    assert subprocess.run([str(rq_script), "--help"], capture_output=True, check=False).returncode == 0
    assert (release / ".queueops" / "requirements.txt").read_text() == "rq==2.12.0\n"
    assert sorted(os.listdir(pool.releases_dir)) == ["1.0"]

    # same code, wheelhouse and requirements: unchanged, without building anything
    assert pool.stage("1.0", source) is False
    # other requirements for the same version: refused, releases are immutable
    with pytest.raises(ReleaseError, match=r"already exists with different content"):
        pool.stage(
            "1.0", Source(code=str(SAMPLE_APP), wheelhouse=str(wheelhouse), requirements=["rq==2.12.0", "click"])
        )
    assert [r["action"] for r in read_jsonl(pool.history_path)] == ["staged"]


def test_releases_share_one_pip_made_once_and_have_none_of_their_own(tmp_path, wheelhouse):
    pool = Pool(str(tmp_path / "root"), "orders")
    source = Source(code=str(SAMPLE_APP), wheelhouse=str(wheelhouse), requirements=["rq==2.12.0"])
    assert pool.stage("1.0", source)
    (helper,) = (p for p in Path(tmp_path, "root", ".pip").iterdir() if not p.name.startswith("."))
    made = helper.stat().st_ino
    assert pool.stage("1.1", source)
    other = Pool(str(tmp_path / "root"), "mail")  # another pool of the same root
    assert other.stage("1.0", source)
    assert helper.stat().st_ino == made  # kept, not made again
    assert (helper / ".queueops-pip").read_text() == "ok\n"
    assert not list(Path(tmp_path, "root", ".pip").glob(".build-*"))
    assert not Path(pool.dir, ".pip").exists() and not Path(other.dir, ".pip").exists()
    for version in ("1.0", "1.1"):
        release = pool.release_path(version)
        assert not list(Path(release, "venv").glob("lib/python*/site-packages/pip"))
        python = Path(release, "venv", "bin", "python")
        check = subprocess.run(
            [str(python), "-c", "import rq, sampleapp"], cwd=release, capture_output=True, check=False
        )
        assert check.returncode == 0, check.stderr
    # a pip whose build was killed before its mark is made again, and the release still built
    (helper / ".queueops-pip").unlink()
    assert pool.stage("1.2", source)
    assert (helper / ".queueops-pip").read_text() == "ok\n"
    rq_script = Path(pool.release_path("1.2"), "venv", "bin", "rq")
    assert subprocess.run([str(rq_script), "--help"], capture_output=True, check=False).returncode == 0


def test_requirement_missing_from_wheelhouse_fails_clearly_and_leaves_no_release(tmp_path, wheelhouse):
    pool = Pool(str(tmp_path / "root"), "orders")
    source = Source(wheelhouse=str(wheelhouse), requirements=["celery==5.5.3"])
    with pytest.raises(ReleaseError, match=r"pip install from wheelhouse .* failed .*celery"):
        pool.stage("2.0", source)
    assert os.listdir(pool.releases_dir) == []
    assert read_jsonl(pool.history_path) == []


def test_module_stages_and_activates_from_a_wheelhouse_and_requirements_file(tmp_path, wheelhouse):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("rq==2.12.0\n")
    params = {
        "root": str(tmp_path / "root"),
        "pool": "emails",
        "version": "7.1",
        "state": "active",
        "src": str(wheelhouse),
        "requirements": [str(requirements)],
    }
    result = run_module("worker_version", params)
    assert not result.failed, result.msg
    assert result.changed
    assert result["current"] == "7.1"
    current = tmp_path / "root" / "emails" / "current"
    check = subprocess.run([str(current / "venv" / "bin" / "python"), "-c", "import rq"], check=False)
    assert check.returncode == 0
    assert (current / ".queueops" / "requirements.txt").read_text() == "rq==2.12.0\n"
    assert not run_module("worker_version", params).changed
