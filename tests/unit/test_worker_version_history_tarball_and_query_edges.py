"""worker_version: edge cases of the history, of tarballs and of query."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import read_jsonl
from ansible_collections.queueops.rollback.plugins.module_utils.releases import Pool, ReleaseError, Source
from tests.support.releases import make_src, staged_pool
from tests.support.runner import run_module


def args(tmp_path, **extra):
    return {"root": str(tmp_path / "root"), "pool": "orders", **extra}


def write_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def test_a_record_appended_after_a_torn_last_line_is_kept_so_a_failed_release_stays_failed(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0"))
    with open(pool.history_path, "ab") as history:  # a run killed in the middle of an append
        history.write(b'{"time":"2024-01-01T00:00:00Z","action":"sta')
    pool.mark_failed("2.0", reason="bad")
    pool.activate("3.0")

    records = read_jsonl(pool.history_path)
    assert [r["action"] for r in records[-2:]] == ["failed", "activated"]
    assert pool.history().failed.keys() == {"2.0"}
    pool.rollback("3.0")
    assert pool.current() == "1.0"  # never the failed 2.0


def test_a_history_line_that_is_json_but_not_an_object_is_ignored_instead_of_a_traceback(tmp_path):
    pool = staged_pool(tmp_path, "1.0", activate=("1.0",))
    with open(pool.history_path, "ab") as history:  # edited by hand
        history.write(b'[1, 2]\n"note"\nnull\n')
    result = run_module("worker_version", args(tmp_path, state="query"))
    assert not result.failed, result.msg
    assert result["current"] == "1.0"
    assert [r["state"] for r in result["releases"]] == ["active"]


def test_tarball_with_a_hard_link_to_a_member_it_lacks_fails_clearly_and_leaves_nothing(tmp_path):
    link = tarfile.TarInfo("app/tasks.py")
    link.type, link.linkname = tarfile.LNKTYPE, "app/missing.py"
    archive = write_tar(tmp_path / "hl.tar.gz", [(tarfile.TarInfo("README"), b"hi\n"), (link, None)])
    result = run_module("worker_version", args(tmp_path, version="1.0", state="staged", src=archive))
    assert result.failed
    assert "MODULE FAILURE" not in result.msg and "Traceback" not in result.msg, result.msg
    assert "hard link to 'app/missing.py'" in result.msg
    assert os.listdir(tmp_path / "root" / "orders" / "releases") == []


@pytest.mark.parametrize("suffix, mode", [(".tar.gz", "w:gz"), (".tar", "w")])
def test_truncated_tarball_is_refused_as_unreadable_and_leaves_nothing(tmp_path, suffix, mode):
    whole = write_tar(tmp_path / f"whole{suffix}", [(tarfile.TarInfo("blob"), os.urandom(300_000))], mode)
    data = Path(whole).read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    pool = Pool(str(tmp_path / "root"), "orders", user="tester")
    with pytest.raises(ReleaseError, match="cannot read archive"):
        pool.stage("1.0", Source(code=str(truncated)))
    assert os.listdir(pool.releases_dir) == []
    assert read_jsonl(pool.history_path) == []


def test_query_after_a_switch_by_hand_reports_the_previous_a_rollback_would_return_to(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    tmp_link = tmp_path / "root" / "orders" / "current.tmp"
    os.symlink("releases/2.0", tmp_link)
    os.rename(tmp_link, pool.current_link)  # someone switched back to 2.0 by hand

    query = run_module("worker_version", args(tmp_path, state="query"))
    assert not query.failed, query.msg
    assert query["current"] == "2.0"
    states = {r["version"]: r["state"] for r in query["releases"]}
    assert states == {"1.0": "superseded", "2.0": "active", "3.0": "superseded"}

    rollback = Pool(str(tmp_path / "root"), "orders", user="tester")
    rollback.reconcile()
    assert rollback.rollback("2.0")
    assert query["previous"] == rollback.current() == "3.0"


def test_release_staged_by_a_run_killed_before_its_record_is_recorded_and_pruned_in_staging_order(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    pool.stage("4.0", Source(code=str(make_src(tmp_path, "4.0"))))
    history = Path(pool.history_path).read_bytes().splitlines(keepends=True)
    with open(pool.history_path, "wb") as handle:  # killed after the rename, before the "staged" record
        handle.writelines(line for line in history if b'"version":"4.0"' not in line)

    again = run_module("worker_version", args(tmp_path, version="4.0", state="active"))
    assert not again.failed, again.msg
    staged = [r for r in read_jsonl(pool.history_path) if r["action"] == "staged"]
    assert [r["version"] for r in staged] == ["1.0", "2.0", "3.0", "4.0"]
    assert [r["version"] for r in again["releases"]] == ["1.0", "2.0", "3.0", "4.0"]

    pruned = run_module("worker_version", args(tmp_path, state="absent", keep=2))
    assert not pruned.failed, pruned.msg
    assert [r["version"] for r in pruned["releases"]] == ["3.0", "4.0"]


def test_check_mode_stage_on_a_new_root_returns_the_digest_the_real_run_records(tmp_path):
    src = str(make_src(tmp_path, "1.0"))
    check = run_module("worker_version", args(tmp_path, version="1.0", state="active", src=src), check=True)
    assert not check.failed, check.msg
    assert not (tmp_path / "root").exists()
    real = run_module("worker_version", args(tmp_path, version="1.0", state="active", src=src))
    assert not real.failed, real.msg
    assert check["releases"][0]["digest"] == real["releases"][0]["digest"]
    assert real["releases"][0]["digest"].startswith("sha256:")
