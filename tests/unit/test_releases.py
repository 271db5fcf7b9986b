"""Releases of a pool on the real filesystem: staging, switching, history-based rollback, pruning."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import FileLock, atomic_symlink, read_jsonl
from ansible_collections.queueops.rollback.plugins.module_utils.releases import (
    Pool,
    ReleaseError,
    Source,
    content_digest,
    tree_entries,
)
from tests.support.releases import make_src, staged_pool
from tests.support.state import tree_state


def actions(pool: Pool) -> list[tuple]:
    return [(r["action"], r["version"], r["from"], r["to"]) for r in read_jsonl(pool.history_path)]


# -- staging ------------------------------------------------------------------------------------


def test_stage_from_directory_builds_release_with_manifest_and_history(tmp_path):
    pool = staged_pool(tmp_path, "1.0")
    release = Path(pool.release_path("1.0"))
    assert (release / "app" / "tasks.py").read_text().startswith("RELEASE = '1.0'")
    assert os.access(release / "run.sh", os.X_OK)
    manifest = json.loads((release / ".queueops" / "release.json").read_text())
    assert manifest["digest"] == content_digest(tree_entries(tmp_path / "src-1.0"))
    assert actions(pool) == [("staged", "1.0", None, None)]
    assert [r["version"] for r in pool.facts()["releases"]] == ["1.0"]
    assert pool.facts()["releases"][0]["state"] == "staged"
    assert sorted(os.listdir(pool.releases_dir)) == ["1.0"]  # no build directory left behind


def test_restaging_same_content_is_unchanged_and_different_content_is_refused(tmp_path):
    pool = staged_pool(tmp_path, "1.0")
    assert pool.stage("1.0", Source(code=str(tmp_path / "src-1.0"))) is False
    before = tree_state(tmp_path / "root")
    changed = make_src(tmp_path / "other", "1.0", extra="BUG = True\n")
    with pytest.raises(ReleaseError, match=r"release 1.0 of pool orders already exists with different content"):
        pool.stage("1.0", Source(code=str(changed)))
    assert tree_state(tmp_path / "root") == before


def test_tarball_with_the_same_files_as_the_directory_is_the_same_release(tmp_path):
    pool = staged_pool(tmp_path, "1.0")
    archive = tmp_path / "release-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src-1.0", arcname=".")
    assert pool.stage("1.0", Source(code=str(archive))) is False
    assert pool.stage("1.1", Source(code=str(archive))) is True
    assert (Path(pool.release_path("1.1")) / "app" / "tasks.py").exists()


def _tarball(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """members: (kind, name, data-or-linkname)."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value.encode())
                tar.addfile(info, io.BytesIO(value.encode()))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = value
                tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("file", "ok.txt", "x"), ("file", "../escaped.txt", "x")], "escapes the release directory"),
        ([("file", "/tmp/absolute.txt", "x")], "has an absolute path"),
        ([("symlink", "etc", "/etc")], "is a link to '/etc' outside the release directory"),
        ([("symlink", "up", "../../..")], "is a link to '../../..' outside the release directory"),
        ([("symlink", "sub/up", "../../x")], "outside the release directory"),
        ([("hardlink", "passwd", "../../etc/passwd")], "is a hard link to '../../etc/passwd' outside"),
        # a chain of links that each look inside: b -> . and a -> b/.. resolve to the parent
        ([("symlink", "b", "."), ("symlink", "a", "b/.."), ("file", "a/escaped.txt", "x")], "outside the release"),
    ],
    ids=["dotdot", "absolute", "symlink-absolute", "symlink-up", "symlink-nested-up", "hardlink-up", "link-chain"],
)
def test_archive_members_escaping_the_release_are_refused_and_nothing_is_left(tmp_path, members, message):
    pool = staged_pool(tmp_path, "1.0")
    before = tree_state(tmp_path / "root")
    archive = _tarball(tmp_path / "evil.tar.gz", members)
    with pytest.raises(ReleaseError, match=message):
        pool.stage("2.0", Source(code=str(archive)))
    history = read_jsonl(pool.history_path)
    assert tree_state(tmp_path / "root") == before
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "root" / "orders" / "escaped.txt").exists()
    assert len(history) == 1


def test_symlinks_inside_an_archive_are_kept(tmp_path):
    pool = Pool(str(tmp_path / "root"), "orders")
    archive = _tarball(
        tmp_path / "ok.tar.gz", [("file", "conf/base.ini", "a=1"), ("symlink", "conf/current.ini", "base.ini")]
    )
    assert pool.stage("1.0", Source(code=str(archive)))
    assert (Path(pool.release_path("1.0")) / "conf" / "current.ini").read_text() == "a=1"


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "x\n", "1.0\x00", "", "-rf", "x" * 129, "a:b"])
def test_bad_pool_and_version_names_are_refused_before_touching_anything(tmp_path, bad):
    with pytest.raises(ReleaseError, match=r"pool"):
        Pool(str(tmp_path / "root"), bad)
    pool = Pool(str(tmp_path / "root"), "orders")
    with pytest.raises(ReleaseError, match=r"version"):
        pool.stage(bad, Source(code=str(make_src(tmp_path, "1.0"))))
    assert not (tmp_path / "root").exists()


def test_relative_root_is_refused(tmp_path):
    with pytest.raises(ReleaseError, match=r"root must be an absolute path"):
        Pool("opt/queueops", "orders")


# -- switching ----------------------------------------------------------------------------------


def test_activate_switches_current_with_relative_link_and_records_from_and_to(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    assert os.readlink(pool.current_link) == "releases/2.0"
    assert actions(pool)[-2:] == [("activated", "1.0", None, "1.0"), ("activated", "2.0", "1.0", "2.0")]
    assert all(r["user"] == "tester" for r in read_jsonl(pool.history_path))
    facts = pool.facts()
    assert (facts["current"], facts["previous"]) == ("2.0", "1.0")
    assert {r["version"]: r["state"] for r in facts["releases"]} == {"1.0": "superseded", "2.0": "active"}
    assert pool.activate("2.0") is False


def test_unstaged_release_cannot_be_activated(tmp_path):
    pool = staged_pool(tmp_path, "1.0")
    with pytest.raises(ReleaseError, match=r"release 9.9 of pool orders is not staged"):
        pool.activate("9.9")


def test_unfinished_build_is_never_a_release_and_is_cleaned_by_the_next_run(tmp_path):
    pool = staged_pool(tmp_path, "1.0", activate=("1.0",))
    leftover = Path(pool.releases_dir) / ".build-2.0-abc123"
    (leftover / "app").mkdir(parents=True)
    assert [r["version"] for r in pool.facts()["releases"]] == ["1.0"]
    with pytest.raises(ReleaseError, match=r"not staged"):
        pool.activate("2.0")
    with pool.locked("test", create=True):
        pass
    assert not leftover.exists()
    assert any(".build-2.0-abc123" in w for w in pool.warnings)


def test_directory_without_manifest_is_incomplete_and_not_a_target(tmp_path):
    pool = staged_pool(tmp_path, "1.0", activate=("1.0",))
    (Path(pool.releases_dir) / "2.0").mkdir()
    assert {r["version"]: r["state"] for r in pool.facts()["releases"]}["2.0"] == "incomplete"
    with pytest.raises(ReleaseError, match=r"not staged"):
        pool.activate("2.0")


READER = textwrap.dedent(
    """
    import os, sys
    link, stop = sys.argv[1], sys.argv[2]
    reads = misses = 0
    while not os.path.exists(stop):
        try:
            os.readlink(link)
            os.stat(link)
            reads += 1
        except OSError:
            misses += 1
    print(reads, misses)
    """
)


def test_reader_never_sees_current_missing_during_1000_switches(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0",))
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, pool.current_link, str(stop)], stdout=subprocess.PIPE, text=True
    )
    try:
        for i in range(1000):
            assert pool.activate("2.0" if i % 2 == 0 else "1.0")
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    reads, misses = map(int, out.split())
    assert misses == 0
    assert reads > 1000
    assert os.readlink(pool.current_link) == "releases/1.0"


# -- failing and rolling back --------------------------------------------------------------------


def test_rollback_returns_to_the_previous_good_release_and_marks_the_bad_one_failed(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    assert pool.rollback("3.0", reason="health gate") is True
    assert pool.current() == "2.0"
    assert actions(pool)[-2:] == [("failed", "3.0", None, None), ("rolled_back", "2.0", "3.0", "2.0")]
    assert {r["version"]: r["state"] for r in pool.facts()["releases"]}["3.0"] == "failed"
    assert pool.facts()["previous"] == "1.0"


def test_release_changed_on_disk_is_never_switched_to(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0",))
    Path(pool.release_path("2.0"), "app", "tasks.py").write_text("RELEASE = 'edited by hand'\n")
    history = read_jsonl(pool.history_path)
    with pytest.raises(ReleaseError, match=r"release 2.0 of pool orders changed on disk since it was staged"):
        pool.activate("2.0")
    assert pool.current() == "1.0"
    assert read_jsonl(pool.history_path) == history


def test_rollback_onto_a_release_changed_on_disk_is_refused_with_nothing_changed(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    (Path(pool.release_path("1.0")) / "run.sh").unlink()
    history = read_jsonl(pool.history_path)
    with pytest.raises(ReleaseError, match=r"release 1.0 of pool orders changed on disk.*not switching to it"):
        pool.rollback("2.0")
    assert pool.current() == "2.0"
    assert read_jsonl(pool.history_path) == history


def test_rollback_rerun_does_not_step_back_twice(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    assert pool.rollback("3.0")
    history = read_jsonl(pool.history_path)
    assert pool.rollback("3.0") is False
    assert pool.current() == "2.0"
    assert read_jsonl(pool.history_path) == history


def test_rollback_skips_a_failed_release(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    assert pool.mark_failed("2.0", reason="bad migration")
    assert pool.mark_failed("2.0") is False
    assert pool.rollback("3.0")
    assert pool.current() == "1.0"


def test_failed_release_is_never_activated_again(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    pool.rollback("2.0")
    with pytest.raises(ReleaseError, match=r"release 2.0 of pool orders is marked failed .* stage a new version"):
        pool.activate("2.0")


def test_rollback_after_interruption_between_mark_failed_and_switch_converges(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    # the first run was killed right after its first write: 3.0 is failed but still current
    pool.mark_failed("3.0", reason="rolled back from 3.0")
    rerun = Pool(pool.root, "orders")
    with rerun.locked("rerun", create=False):
        rerun.reconcile()
        assert rerun.rollback("3.0")
    assert rerun.current() == "2.0"
    assert [a for a in actions(pool) if a[0] in ("failed", "rolled_back")] == [
        ("failed", "3.0", None, None),
        ("rolled_back", "2.0", "3.0", "2.0"),
    ]
    assert Pool(pool.root, "orders").rollback("3.0") is False


def test_rollback_after_interruption_between_switch_and_record_converges(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    # the first run was killed after switching, before recording the switch
    pool.mark_failed("3.0")
    atomic_symlink(pool.current_link, "releases/2.0")
    rerun = Pool(pool.root, "orders")
    with rerun.locked("rerun", create=False):
        rerun.reconcile()
        assert rerun.rollback("3.0") is False
    assert rerun.current() == "2.0"  # not 1.0: it does not step back twice
    assert actions(pool)[-1] == ("rolled_back", "2.0", "3.0", "2.0")
    assert rerun.facts()["previous"] == "1.0"
    history = read_jsonl(pool.history_path)
    again = Pool(pool.root, "orders")
    again.reconcile()
    assert again.rollback("3.0") is False
    assert again.actions == []
    assert read_jsonl(pool.history_path) == history


def test_rollback_of_a_release_that_is_not_current_changes_nothing(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    before = tree_state(tmp_path / "root")
    assert pool.rollback("1.0") is False
    assert pool.rollback("7.7") is False
    assert tree_state(tmp_path / "root") == before


def test_rollback_to_a_named_version_and_refusals(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    pool.mark_failed("2.0")
    with pytest.raises(ReleaseError, match=r"to_version 2.0 is marked failed"):
        pool.rollback("3.0", to_version="2.0")
    with pytest.raises(ReleaseError, match=r"to_version 9.0 is not a staged release"):
        pool.rollback("3.0", to_version="9.0")
    assert pool.rollback("3.0", to_version="1.0")
    assert pool.current() == "1.0"


def test_rollback_with_no_good_release_before_asks_for_to_version(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0",))
    with pytest.raises(ReleaseError, match=r"no release of pool orders was active before 1.0 .* to_version"):
        pool.rollback("1.0")
    assert pool.current() == "1.0"


def test_switch_made_by_hand_is_recorded_before_deciding(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0"))
    atomic_symlink(pool.current_link, "releases/3.0")
    pool.reconcile()
    assert actions(pool)[-1] == ("activated", "3.0", "2.0", "3.0")
    assert pool.rollback("3.0")
    assert pool.current() == "2.0"


# -- pruning ------------------------------------------------------------------------------------


def test_prune_removes_oldest_but_keeps_current_and_last_good(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", "4.0", "5.0", "6.0", activate=("1.0", "2.0"))
    assert pool.prune(3) == ["3.0"]  # older than the newest three, and neither current nor last good
    assert sorted(os.listdir(pool.releases_dir)) == ["1.0", "2.0", "4.0", "5.0", "6.0"]
    assert [a[1] for a in actions(pool) if a[0] == "pruned"] == ["3.0"]
    assert pool.prune(0) == ["4.0", "5.0", "6.0"]
    assert sorted(os.listdir(pool.releases_dir)) == ["1.0", "2.0"]
    assert pool.prune(0) == []


def test_prune_never_removes_a_release_staged_after_the_current_one(tmp_path):
    pool = staged_pool(tmp_path, "1", "2", "3", activate=("1", "2", "3"))
    assert pool.stage("4", Source(code=str(make_src(tmp_path, "4"))))
    assert pool.prune(2) == ["1"]
    assert sorted(os.listdir(pool.releases_dir)) == ["2", "3", "4"]


def test_prune_keeps_the_last_good_release_not_the_failed_one(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    pool.mark_failed("2.0")
    assert pool.prune(0) == ["2.0"]
    assert sorted(os.listdir(pool.releases_dir)) == ["1.0", "3.0"]


def test_removing_the_current_or_last_good_release_is_refused(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0"))
    with pytest.raises(ReleaseError, match=r"release 2.0 is current"):
        pool.remove("2.0")
    with pytest.raises(ReleaseError, match=r"release 1.0 is the last good release before 2.0"):
        pool.remove("1.0")
    assert pool.remove("3.0") is True
    assert pool.remove("3.0") is False


# -- lock and check mode -------------------------------------------------------------------------


def test_second_run_fails_fast_naming_the_holder(tmp_path):
    pool = staged_pool(tmp_path, "1.0")
    with (
        FileLock(pool.lock_path, "alice: worker_version state=active version=1.0"),
        pytest.raises(ReleaseError, match=r"pool orders is busy: .*alice: worker_version state=active"),
        Pool(pool.root, "orders").locked("second", create=True),
    ):
        pass
    with Pool(pool.root, "orders").locked("after release", create=True):
        pass


def test_check_mode_leaves_the_tree_byte_for_byte_unchanged(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    src = make_src(tmp_path, "4.0")
    before = tree_state(tmp_path / "root")
    dry = Pool(pool.root, "orders", check_mode=True)
    with dry.locked("check", create=True):
        dry.reconcile()
        assert dry.stage("4.0", Source(code=str(src)))
        assert dry.activate("4.0")
        assert dry.rollback("4.0")
        assert dry.prune(1) == ["1.0"]
        assert dry.facts()["current"] == "3.0"
    assert dry.actions == [
        "stage release 4.0 (" + content_digest(tree_entries(src)) + ")",
        "switch current from 3.0 to 4.0",
        "mark release 4.0 failed",
        "switch current from 4.0 to 3.0",
        "remove release 1.0",
    ]
    assert tree_state(tmp_path / "root") == before


def test_check_mode_on_a_new_pool_creates_nothing(tmp_path):
    dry = Pool(str(tmp_path / "root"), "orders", check_mode=True)
    with dry.locked("check", create=True):
        assert dry.stage("1.0", Source(code=str(make_src(tmp_path, "1.0"))))
        assert dry.activate("1.0")
    assert dry.facts()["current"] == "1.0"
    assert not (tmp_path / "root").exists()
