"""The file side of snapshots: special files, odd names, symlinked directories, globs, pseudo-filesystems
and the limits of a walk (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    RestorePlan,
    load_manifest,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_store import (
    apply_restore,
    plan_restore,
    take_snapshot,
)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "snapshots")


def restore(store: str, name: str = "n") -> RestorePlan:
    plan = plan_restore(store, name, None, None)
    apply_restore(plan, store, name)
    return plan


def test_fifo_present_at_snapshot_time_is_not_removed_by_the_restore(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    (top / "app.conf").write_text("x\n")
    os.mkfifo(top / "control.fifo")
    taken = take_snapshot(store, "n", [str(top)], [], None)
    assert any("control.fifo" in warning for warning in taken.warnings)

    plan = plan_restore(store, "n", None, None)
    assert not plan.changed, plan.outline()
    (top / "app.conf").write_text("changed\n")
    restore(store)
    assert (top / "control.fifo").exists() and (top / "app.conf").read_text() == "x\n"


def test_symlink_with_a_non_utf8_target_is_snapshotted_and_restored(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    link = os.fsencode(top / "current")
    os.symlink(b"release-\xff", link)
    taken = take_snapshot(store, "n", [str(top)], [], None)
    assert taken.changed
    os.unlink(link)
    os.symlink(b"other", link)
    restore(store)
    assert os.readlink(link) == b"release-\xff"


def test_path_that_is_a_symlink_to_a_directory_warns_that_only_the_link_is_kept(tmp_path, store):
    real = tmp_path / "opt" / "orders-conf"
    real.mkdir(parents=True)
    (real / "app.conf").write_text("x\n")
    link = tmp_path / "etc-orders"
    os.symlink(real, link)
    taken = take_snapshot(store, "n", [f"{link}/"], [], None)
    assert taken.summary["files"] == 1
    assert any(str(link) in w and "symlink to a directory" in w and str(real) in w for w in taken.warnings), (
        taken.warnings
    )


def test_recursive_glob_keeps_symlinked_dirs_as_links_and_does_not_loop_through_them(tmp_path, store):
    top = tmp_path / "etc" / "app"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "f.conf").write_text("f\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s\n")
    os.symlink(outside, top / "linkout")
    os.symlink("..", top / "sub" / "up")  # a loop
    taken = take_snapshot(store, "n", [f"{top}/**"], [], None, allowed_roots=[str(tmp_path / "etc")])
    paths = {e["path"]: e["type"] for e in load_manifest(Path(taken.path))["entries"]}
    assert paths == {
        str(top): "dir",
        str(top / "sub"): "dir",
        str(top / "sub" / "f.conf"): "file",
        str(top / "sub" / "up"): "symlink",
        str(top / "linkout"): "symlink",
    }
    (outside / "created-later").write_text("mine\n")
    plan = restore(store)
    assert plan.outline()["files_removed"] == []
    assert (outside / "created-later").exists()
