"""config_snapshot under adversarial input: special files, non-UTF-8 names, symlinked dirs,
corrupt latest snapshots and restores that stop half-way (real files, real Redis, real modules)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils import snapshots as snap
from tests.support.runner import run_module
from tests.support.state import tree_state


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "snapshots")


def restore(store: str, name: str = "n") -> snap.RestorePlan:
    plan = snap.plan_restore(store, name, None, None)
    snap.apply_restore(plan, store, name)
    return plan


def test_fifo_present_at_snapshot_time_is_not_removed_by_the_restore(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    (top / "app.conf").write_text("x\n")
    os.mkfifo(top / "control.fifo")
    taken = snap.take_snapshot(store, "n", [str(top)], [], None)
    assert any("control.fifo" in warning for warning in taken.warnings)

    plan = snap.plan_restore(store, "n", None, None)
    assert not plan.changed, plan.outline()
    (top / "app.conf").write_text("changed\n")
    restore(store)
    assert (top / "control.fifo").exists() and (top / "app.conf").read_text() == "x\n"


def test_symlink_with_a_non_utf8_target_is_snapshotted_and_restored(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    link = os.fsencode(top / "current")
    os.symlink(b"release-\xff", link)
    taken = snap.take_snapshot(store, "n", [str(top)], [], None)
    assert taken.changed
    os.unlink(link)
    os.symlink(b"other", link)
    restore(store)
    assert os.readlink(link) == b"release-\xff"


def test_non_utf8_file_names_do_not_fail_take_and_restore_tasks(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    odd = os.fsencode(top) + b"/caf\xe9.conf"  # latin-1 name
    Path(os.fsdecode(odd)).write_text("v1\n")
    (top / "new\nline.conf").write_text("v1\n")
    args = {"name": "n", "root": store, "paths": [str(top)]}

    taken = run_module("config_snapshot", args, diff=True)
    assert (taken.failed, taken.changed) == (False, True), taken.msg
    assert str(top / "caf\\xe9.conf") in taken["changes"]["files_added"]

    Path(os.fsdecode(odd)).write_text("v2\n")
    restored = run_module("config_snapshot", {**args, "state": "restored"}, diff=True)
    assert (restored.failed, restored.changed) == (False, True), restored.msg
    assert restored["restored"]["files_restored"] == [str(top / "caf\\xe9.conf")]
    assert Path(os.fsdecode(odd)).read_text() == "v1\n"


def test_path_that_is_a_symlink_to_a_directory_warns_that_only_the_link_is_kept(tmp_path, store):
    real = tmp_path / "opt" / "orders-conf"
    real.mkdir(parents=True)
    (real / "app.conf").write_text("x\n")
    link = tmp_path / "etc-orders"
    os.symlink(real, link)
    taken = snap.take_snapshot(store, "n", [f"{link}/"], [], None)
    assert taken.summary["files"] == 1
    assert any(str(link) in w and "symlink to a directory" in w and str(real) in w for w in taken.warnings), (
        taken.warnings
    )


def test_take_equal_to_a_corrupt_latest_snapshot_takes_a_new_one(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    (top / "app.conf").write_text("x\n")
    first = snap.take_snapshot(store, "n", [str(top)], [], None)
    blob = Path(first.path, "files.bin")
    blob.write_bytes(blob.read_bytes()[:-1])

    again = snap.take_snapshot(store, "n", [str(top)], [], None)
    assert again.changed and again.snap_id != first.snap_id
    assert any("corrupt" in warning for warning in again.warnings), again.warnings
    (top / "app.conf").write_text("drifted\n")
    restore(store)  # the latest is the good one
    assert (top / "app.conf").read_text() == "x\n"


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


def test_restore_stopped_half_way_says_what_was_done_and_converges_when_run_again(
    tmp_path, store, redis_server, redis_client
):
    top = tmp_path / "etc"
    (top / "a").mkdir(parents=True)
    (top / "b").mkdir()
    (top / "a" / "1.conf").write_text("1\n")
    (top / "b" / "2.conf").write_text("2\n")
    redis_client.set("cfg:gate", "on")
    args = {"name": "n", "root": store, "paths": [str(top)], "redis_keys": ["cfg:*"], "redis_url": redis_server.url}
    assert not run_module("config_snapshot", args).failed
    before = tree_state(top)
    (top / "a" / "1.conf").write_text("changed\n")
    (top / "b" / "2.conf").write_text("changed\n")
    redis_client.set("cfg:gate", "off")
    try:
        _chattr("+i", top / "b")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no immutable directories here: {exc}")
    try:
        stopped = run_module("config_snapshot", {**args, "state": "restored"})
    finally:
        _chattr("-i", top / "b")

    assert stopped.failed
    assert str(top / "b" / "2.conf") in stopped.msg and "Operation not permitted" in stopped.msg
    assert "not restored" in stopped.msg and "run again" in stopped.msg
    assert stopped["restored"]["files_restored"] == [str(top / "a" / "1.conf")]
    assert stopped["restored"]["keys_restored"] == []
    assert redis_client.get("cfg:gate") == b"off"

    again = run_module("config_snapshot", {**args, "state": "restored"})
    assert (again.failed, again.changed) == (False, True), again.msg
    assert again["restored"]["files_restored"] == [str(top / "b" / "2.conf")]
    assert tree_state(top) == before and redis_client.get("cfg:gate") == b"on"
    shutil.rmtree(top)


def test_recursive_glob_keeps_symlinked_dirs_as_links_and_does_not_loop_through_them(tmp_path, store):
    top = tmp_path / "etc" / "app"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "f.conf").write_text("f\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s\n")
    os.symlink(outside, top / "linkout")
    os.symlink("..", top / "sub" / "up")  # a loop
    taken = snap.take_snapshot(store, "n", [f"{top}/**"], [], None, allowed_roots=[str(tmp_path / "etc")])
    paths = {e["path"]: e["type"] for e in snap.load_manifest(Path(taken.path))["entries"]}
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


def test_a_path_with_a_nul_byte_is_refused_in_words_for_take_and_restore(tmp_path):
    for state in ("present", "restored"):
        result = run_module(
            "config_snapshot",
            {"name": "app", "root": str(tmp_path / "store"), "paths": ["/etc/app\x00.conf"], "state": state},
        )
        assert result.failed
        assert result.msg == "paths cannot contain a NUL byte: '/etc/app\\x00.conf'"
    assert not (tmp_path / "store").exists()
