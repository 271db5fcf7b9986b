"""The file side of snapshots: special files, odd names, symlinked directories, globs, pseudo-filesystems
and the limits of a walk (real files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_files import (
    Places,
    parse_mountinfo,
    scan_paths,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    LimitExceeded,
    Limits,
    PathNotAllowed,
    RestorePlan,
    SnapshotError,
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


# -------------------------------------------------------------------- pseudo-filesystems, limits


@pytest.mark.parametrize("path", ["/proc/**", "/proc/self/status", "/sys", "/dev/null", "/run/**", "/dev/*"])
def test_paths_on_pseudo_filesystems_are_refused_before_anything_is_written(store, path):
    with pytest.raises(PathNotAllowed, match=r"is on a pseudo-filesystem \(/(proc|sys|dev|run)\)"):
        take_snapshot(store, "n", [path], [])
    assert not Path(store).exists()


def test_a_symlink_into_proc_is_refused_by_where_it_resolves(tmp_path, store):
    os.symlink("/proc/self", tmp_path / "innocent")
    with pytest.raises(PathNotAllowed, match=r"innocent/status \(really /proc/\d+/status\) is on a pseudo-filesystem"):
        take_snapshot(store, "n", [str(tmp_path / "innocent" / "status")], [])


def test_a_kernel_filesystem_mounted_elsewhere_is_refused_unless_something_is_mounted_over_it(tmp_path):
    mountinfo = (
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        f"30 22 0:5 / {tmp_path}/kernel rw - sysfs sysfs rw\n"
        f"31 22 0:6 / {tmp_path}/with\\040space rw - proc proc rw\n"
        f"32 31 8:2 / {tmp_path}/with\\040space rw - ext4 /dev/sda2 rw\n"
    )
    places = Places(str(tmp_path / "store"), None, parse_mountinfo(mountinfo))
    with pytest.raises(PathNotAllowed, match=rf"a sysfs filesystem mounted at {tmp_path}/kernel"):
        places.check(str(tmp_path / "kernel" / "x"))
    places.check(str(tmp_path / "with space" / "app.conf"))  # ext4 mounted over the proc mount
    places.check(str(tmp_path / "kernelish"))


def _tree(top: Path, dirs: int, files_each: int) -> None:
    for d in range(dirs):
        (top / f"d{d:03}").mkdir(parents=True)
        for f in range(files_each):
            (top / f"d{d:03}" / f"f{f}.conf").write_text("x\n")


@pytest.mark.parametrize("pattern", ["{top}", "{top}/**", "{top}/**/*.conf", "{top}/*/f1.conf"])
def test_more_entries_than_max_files_are_refused_and_the_walk_stops_where_the_limit_is_crossed(
    tmp_path, store, pattern
):
    top = tmp_path / "etc"
    _tree(top, dirs=30, files_each=3)
    limits = Limits(max_files=20)
    with pytest.raises(LimitExceeded, match=r"more than max_files=20 .*nothing was written") as raised:
        take_snapshot(store, "n", [pattern.format(top=top)], [], limits=limits)
    assert "the limit was crossed at " + str(top) in str(raised.value)
    assert limits.items == 21 or limits.walked == 21  # stopped at once: no tree listed beyond the limit
    assert not Path(store).exists()


def test_a_glob_that_walks_more_directories_than_max_files_is_refused(tmp_path, store):
    top = tmp_path / "etc"
    _tree(top, dirs=30, files_each=0)
    with pytest.raises(LimitExceeded, match=rf"the glob {top}/\*\*/\*.conf looked into more than max_files=10"):
        take_snapshot(store, "n", [f"{top}/**/*.conf"], [], limits=Limits(max_files=10))


def test_a_file_larger_than_max_bytes_is_refused_without_being_read(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    (top / "small.conf").write_text("x\n")
    with open(top / "huge.img", "wb") as handle:  # sparse: 64 GiB that would take minutes to hash
        handle.truncate(64 << 30)
    with pytest.raises(LimitExceeded, match=r"more than max_bytes=1073741824 bytes .*crossed at .*huge.img"):
        take_snapshot(store, "n", [str(top)], [])
    assert not Path(store).exists()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_limits_must_be_whole_numbers_of_at_least_one(bad):
    with pytest.raises(SnapshotError, match=r"max_files must be a whole number of at least 1"):
        Limits(max_files=bad)


def test_scan_of_a_tree_within_limits_counts_every_file_directory_and_link(tmp_path, store):
    top = tmp_path / "etc"
    _tree(top, dirs=2, files_each=2)
    os.symlink("d000", top / "link")
    limits = Limits(max_files=8, max_bytes=8)
    scan = scan_paths([str(top)], store, None, limits)
    assert (len(scan.entries), limits.items, limits.size) == (8, 8, 8)
