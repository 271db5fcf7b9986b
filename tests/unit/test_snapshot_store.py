"""The snapshot store: snapshots of files and Redis keys taken, verified, restored, listed and pruned
(real files, real Redis)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_diff import restore_diff
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import (
    CorruptSnapshot,
    PathNotAllowed,
    RestorePlan,
    SnapshotError,
    UnknownSnapshot,
    load_manifest,
)
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_store import (
    TakeResult,
    apply_restore,
    delete_snapshots,
    list_snapshots,
    plan_restore,
    prune_ids,
    resolve_id,
    take_snapshot,
)
from tests.support.state import key_dumps, tree_state

PATTERNS = ["app:*"]


# ------------------------------------------------------------------------------------ helpers


def key_values(client) -> dict[bytes, object]:
    """Logical values of the app keys (encoding independent)."""
    values = {}
    for name in sorted(client.scan_iter(match="app:*")):
        kind = client.type(name).decode()
        if kind == "string":
            values[name] = client.get(name)
        elif kind == "hash":
            values[name] = client.hgetall(name)
        elif kind == "list":
            values[name] = client.lrange(name, 0, -1)
        elif kind == "set":
            values[name] = client.smembers(name)
        elif kind == "zset":
            values[name] = client.zrange(name, 0, -1, withscores=True)
        elif kind == "stream":
            groups = [(g["name"], g["last-delivered-id"], g["pending"]) for g in client.xinfo_groups(name)]
            values[name] = (client.xrange(name), groups)
    return values


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A config tree: text, binary, nested dirs, a symlink, a file owned by uid 1234, an odd mode."""
    top = tmp_path / "etc"
    (top / "app" / "conf.d" / "deep").mkdir(parents=True)
    (top / "app" / "app.conf").write_text("workers = 4\nqueues = orders,emails\n")
    (top / "app" / "conf.d" / "limits.conf").write_text("rate = 10/s\n")
    (top / "app" / "conf.d" / "deep" / "secret.env").write_text("TOKEN=abc\n")
    os.chmod(top / "app" / "conf.d" / "deep" / "secret.env", 0o640)
    os.chown(top / "app" / "conf.d" / "deep" / "secret.env", 1234, 1234)
    os.chmod(top / "app" / "conf.d", 0o750)
    (top / "app" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    os.symlink("app.conf", top / "app" / "current.conf")
    (top / "unit.service").write_text("[Service]\nExecStart=/bin/true\n")
    return top


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "snapshots")


def seed_keys(client) -> None:
    client.set("app:gate:new-router", "on", px=600_000)
    client.set("app:counter", 42)
    client.hset("app:routing", mapping={f"task{i}": f"queue{i % 3}" for i in range(200)})  # hashtable encoding
    client.expire("app:routing", 900)
    client.rpush("app:list", "a", "b", "c")
    client.sadd("app:set", *[f"m{i}" for i in range(100)])
    client.sadd("app:small-set", "x", "y")
    client.zadd("app:limits", {"orders": 10, "emails": 2.5})
    client.pexpire("app:limits", 700_000)
    client.xadd("app:stream", {"event": "one"})
    client.xadd("app:stream", {"event": "two"})
    client.xgroup_create("app:stream", "workers", id="0")
    client.xreadgroup("workers", "c1", {"app:stream": ">"}, count=1)
    client.set("other:untouched", "keep me")


def take(store: str, etc: Path, client=None, **kwargs) -> TakeResult:
    patterns = PATTERNS if client is not None else []
    return take_snapshot(store, "orders", [str(etc / "app"), str(etc / "unit.service")], patterns, client, **kwargs)


def restore(store: str, client=None, snap_id=None, **kwargs) -> RestorePlan:
    plan = plan_restore(store, "orders", snap_id, (lambda: client) if client is not None else None, **kwargs)
    apply_restore(plan, store, "orders", client)
    return plan


# ---------------------------------------------------------------------------------- round trip


def test_round_trip_restores_content_mode_owner_nested_dirs_deleted_and_added_files(etc, store):
    before = tree_state(etc)
    taken = take(store, etc)
    assert taken.changed and taken.summary["files"] == 6 and taken.summary["dirs"] == 3

    (etc / "app" / "app.conf").write_text("workers = 1\n")
    os.chmod(etc / "app" / "app.conf", 0o666)
    os.chown(etc / "app" / "conf.d" / "deep" / "secret.env", 0, 0)
    (etc / "app" / "conf.d" / "limits.conf").unlink()
    (etc / "app" / "conf.d" / "deep" / "secret.env").unlink()
    (etc / "app" / "conf.d" / "deep").rmdir()
    (etc / "app" / "blob.bin").write_bytes(b"\0garbage")
    (etc / "app" / "current.conf").unlink()
    os.symlink("elsewhere.conf", etc / "app" / "current.conf")
    (etc / "app" / "added.conf").write_text("new = 1\n")
    (etc / "app" / "new-dir" / "inner").mkdir(parents=True)
    (etc / "app" / "new-dir" / "inner" / "x.conf").write_text("x\n")
    (etc / "unit.service").unlink()

    plan = restore(store)

    assert tree_state(etc) == before
    assert set(plan.outline()["files_removed"]) == {
        str(etc / "app" / "added.conf"),
        str(etc / "app" / "new-dir"),
        str(etc / "app" / "new-dir" / "inner"),
        str(etc / "app" / "new-dir" / "inner" / "x.conf"),
    }
    assert (etc / "app" / "conf.d" / "deep" / "secret.env").stat().st_uid == 1234


def test_keep_new_files_leaves_files_created_after_the_snapshot(etc, store):
    take(store, etc)
    (etc / "app" / "added.conf").write_text("new = 1\n")
    (etc / "app" / "app.conf").write_text("changed\n")
    plan = restore(store, keep_new_files=True)
    assert (etc / "app" / "added.conf").read_text() == "new = 1\n"
    assert (etc / "app" / "app.conf").read_text().startswith("workers = 4")
    assert plan.outline()["files_removed"] == []


def test_round_trip_restores_every_redis_type_with_its_ttl(etc, store, redis_client):
    seed_keys(redis_client)
    expected = key_values(redis_client)
    taken = take(store, etc, redis_client)
    assert taken.summary["keys"] == 8  # other:untouched is not matched

    redis_client.set("app:gate:new-router", "off")  # value changed, TTL dropped
    redis_client.incr("app:counter")
    redis_client.hset("app:routing", "task7", "elsewhere")
    redis_client.persist("app:routing")
    redis_client.delete("app:list")
    redis_client.srem("app:set", "m3")
    redis_client.zadd("app:limits", {"orders": 99})
    redis_client.xadd("app:stream", {"event": "three"})
    redis_client.set("app:added-later", "x")
    redis_client.set("other:untouched", "still mine")

    plan = restore(store, redis_client)

    assert key_values(redis_client) == expected
    assert redis_client.exists("app:added-later") == 0
    assert redis_client.get("other:untouched") == b"still mine"
    assert 0 < redis_client.pttl("app:gate:new-router") <= 600_000
    assert 0 < redis_client.pttl("app:routing") <= 900_000
    assert 0 < redis_client.pttl("app:limits") <= 700_000
    assert redis_client.pttl("app:counter") == -1
    assert redis_client.pttl("app:list") == -1
    assert plan.outline()["keys_deleted"] == ["app:added-later"]
    assert not plan_restore(store, "orders", None, lambda: redis_client).changed  # every type in place
    assert set(plan.outline()["keys_restored"]) == {
        "app:gate:new-router", "app:counter", "app:routing", "app:list", "app:set", "app:limits", "app:stream",
    }  # fmt: skip


def test_binary_key_names_round_trip(store, redis_client):
    name = b"app:\xff\xfe-raw"
    redis_client.set(name, b"\x00\x01")
    take_snapshot(store, "orders", [], PATTERNS, redis_client)
    redis_client.set(name, b"changed")
    restore(store, redis_client)
    assert redis_client.get(name) == b"\x00\x01"


def test_event_stream_is_never_snapshotted_nor_rolled_back(store, redis_client):
    redis_client.xadd("queueops:events", {"action": "before"})
    redis_client.set("cfg", "1")
    taken = take_snapshot(store, "orders", [], ["*"], redis_client)
    assert taken.summary["keys"] == 1
    redis_client.xadd("queueops:events", {"action": "after"})
    redis_client.set("cfg", "2")
    restore(store, redis_client)
    assert (redis_client.get("cfg"), redis_client.xlen("queueops:events")) == (b"1", 2)


def test_snapshot_directories_and_files_are_readable_by_root_only(etc, store, redis_client):
    seed_keys(redis_client)
    taken = take(store, etc, redis_client)
    for dirpath, dirnames, filenames in os.walk(store):
        for dirname in dirnames:
            assert stat.S_IMODE(os.stat(Path(dirpath, dirname)).st_mode) == 0o700, dirname
        for filename in filenames:
            if filename != ".lock":
                assert stat.S_IMODE(os.stat(Path(dirpath, filename)).st_mode) == 0o600, filename
    manifest = json.loads(Path(taken.path, "manifest.json").read_text())
    secret = next(e for e in manifest["entries"] if e["path"].endswith("secret.env"))
    assert (secret["mode"], secret["uid"], secret["gid"], secret["size"]) == (0o640, 1234, 1234, 10)
    assert secret["relative"] == "app/conf.d/deep/secret.env"
    assert {k["name"]: (k["type"], k["ttl_ms"] > 0) for k in manifest["keys"]}["app:routing"] == ("hash", True)


# --------------------------------------------------------------------------------- idempotence


def test_taking_unchanged_content_returns_the_latest_id_unchanged(etc, store, redis_client):
    seed_keys(redis_client)
    first = take(store, etc, redis_client)
    time.sleep(0.01)  # TTLs decay between the two: that is not a change
    again = take(store, etc, redis_client)
    assert (again.changed, again.snap_id) == (False, first.snap_id)
    assert len(list_snapshots(store, "orders")) == 1

    redis_client.hset("app:routing", "task1", "other")
    changed = take(store, etc, redis_client, reason="deploy 2.4.1")
    assert changed.changed and changed.snap_id != first.snap_id
    assert changed.changes["keys_changed"] == ["app:routing"]
    assert changed.summary["reason"] == "deploy 2.4.1"


def test_restore_of_what_is_in_place_changes_nothing(etc, store, redis_client):
    seed_keys(redis_client)
    take(store, etc, redis_client)
    # Hash-table encoded sets and hashes DUMP differently after RESTORE: still "in place".
    assert not plan_restore(store, "orders", None, lambda: redis_client).changed
    redis_client.hset("app:routing", "task1", "other")
    (etc / "app" / "app.conf").write_text("changed\n")
    assert restore(store, redis_client).changed
    again = plan_restore(store, "orders", None, lambda: redis_client)
    assert not again.changed, again.outline()


def test_owner_only_change_is_fixed_without_rewriting_the_file(etc, store):
    take(store, etc)
    target = etc / "app" / "app.conf"
    inode = target.stat().st_ino
    os.chown(target, 1234, 1234)
    plan = restore(store)
    assert plan.outline()["files_metadata_fixed"] == [str(target)]
    assert plan.outline()["files_restored"] == []
    assert (target.stat().st_uid, target.stat().st_ino) == (0, inode)


# ----------------------------------------------------------------------------------- corruption


def _flip_file_blob(snapdir: Path) -> str:
    blob = snapdir / "files.bin"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    return "has sha256"


def _truncate_keys(snapdir: Path) -> str:
    blob = snapdir / "keys.bin"
    blob.write_bytes(blob.read_bytes()[:-7])
    return "keys.bin has"


def _truncate_file_blob(snapdir: Path) -> str:
    blob = snapdir / "files.bin"
    size = blob.stat().st_size
    blob.write_bytes(blob.read_bytes()[:-10])
    return f"is truncated (files.bin has {size - 10} bytes, expected {size})"


def _remove_manifest(snapdir: Path) -> str:
    (snapdir / "manifest.json").unlink()
    return "manifest.json is missing"


def _edit_manifest(snapdir: Path) -> str:
    path = snapdir / "manifest.json"
    path.write_text(path.read_text().replace('"ttl_ms":0', '"ttl_ms":1', 1))
    return "manifest.json has sha256"


def _flip_key_payload(snapdir: Path) -> str:
    blob = snapdir / "keys.bin"
    data = bytearray(blob.read_bytes())
    data[5] ^= 0x40
    blob.write_bytes(bytes(data))
    return "the DUMP of key app:"


@pytest.mark.parametrize(
    "corrupt", [_flip_file_blob, _truncate_file_blob, _truncate_keys, _flip_key_payload, _remove_manifest,
                _edit_manifest],
)  # fmt: skip
def test_restore_refuses_corrupted_snapshot_and_changes_nothing(etc, store, redis_client, corrupt):
    seed_keys(redis_client)
    taken = take(store, etc, redis_client)
    (etc / "app" / "app.conf").write_text("drifted\n")
    (etc / "app" / "added.conf").write_text("new\n")
    redis_client.set("app:counter", 7)
    redis_client.set("app:added-later", "x")
    expected_message = corrupt(Path(taken.path))
    files_before, keys_before = tree_state(etc), key_dumps(redis_client)

    with pytest.raises(CorruptSnapshot) as raised:
        plan_restore(store, "orders", None, lambda: redis_client)

    assert f"snapshot orders/{taken.snap_id} is corrupt" in str(raised.value)
    assert expected_message in str(raised.value)
    assert tree_state(etc) == files_before
    assert key_dumps(redis_client) == keys_before


def test_half_written_snapshot_is_never_listed(etc, store):
    taken = take(store, etc)
    (Path(store) / "orders" / ".tmp-crashed").mkdir()
    assert [item["id"] for item in list_snapshots(store, "orders")] == [taken.snap_id]
    assert resolve_id(store, "orders", None) == taken.snap_id


def test_take_equal_to_a_corrupt_latest_snapshot_takes_a_new_one(tmp_path, store):
    top = tmp_path / "etc"
    top.mkdir()
    (top / "app.conf").write_text("x\n")
    first = take_snapshot(store, "orders", [str(top)], [], None)
    blob = Path(first.path, "files.bin")
    blob.write_bytes(blob.read_bytes()[:-1])

    again = take_snapshot(store, "orders", [str(top)], [], None)
    assert again.changed and again.snap_id != first.snap_id
    assert any("corrupt" in warning for warning in again.warnings), again.warnings
    (top / "app.conf").write_text("drifted\n")
    restore(store)  # the latest is the good one
    assert (top / "app.conf").read_text() == "x\n"


# ------------------------------------------------------------------------------ listing, pruning


def test_pruning_keeps_the_newest_and_listing_is_oldest_first(etc, store):
    ids = []
    for n in range(4):
        (etc / "app" / "app.conf").write_text(f"version {n}\n")
        ids.append(take(store, etc, reason=f"r{n}").snap_id)
    listed = list_snapshots(store, "orders")
    assert [item["id"] for item in listed] == ids
    assert [item["reason"] for item in listed] == ["r0", "r1", "r2", "r3"]
    assert all(item["size"] > 0 and item["files"] == 6 for item in listed)

    doomed = prune_ids(store, "orders", 2)
    assert doomed == ids[:2]
    assert delete_snapshots(store, "orders", doomed) == ids[:2]
    assert [item["id"] for item in list_snapshots(store, "orders")] == ids[2:]
    assert delete_snapshots(store, "orders", ids[:2]) == []  # already gone


def test_unknown_id_is_refused_naming_the_latest(etc, store):
    taken = take(store, etc)
    with pytest.raises(
        UnknownSnapshot, match=rf"snapshot '20200101T000000Z-deadbeef' of 'orders' not found.*{taken.snap_id}"
    ):
        plan_restore(store, "orders", "20200101T000000Z-deadbeef")
    with pytest.raises(SnapshotError, match=r"must not contain '/'"):
        plan_restore(store, "orders", "../../etc")
    with pytest.raises(UnknownSnapshot, match=r"no snapshot of 'payments'"):
        plan_restore(store, "payments", None)


# -------------------------------------------------------------------------------- paths, globs


def test_paths_outside_allowed_roots_are_refused_for_take_and_restore(etc, store, tmp_path):
    with pytest.raises(PathNotAllowed, match=r"path /etc/passwd is outside allowed_roots"):
        take_snapshot(store, "orders", [str(etc / "app"), "/etc/passwd"], [], allowed_roots=[str(etc)])
    os.symlink("/etc", etc / "escape")
    with pytest.raises(PathNotAllowed, match=r"escape/hostname is outside allowed_roots"):
        take_snapshot(store, "orders", [str(etc / "escape" / "hostname")], [], allowed_roots=[str(etc)])
    take(store, etc)
    with pytest.raises(PathNotAllowed, match=r"unit.service is outside allowed_roots"):
        plan_restore(store, "orders", None, allowed_roots=[str(etc / "app")])
    assert not Path(store, "orders", ".lock").read_text()  # nothing held, nothing started


def test_restore_removes_new_glob_matches_and_paths_absent_at_snapshot_time(etc, store):
    pattern = str(etc / "app" / "**" / "*.conf")
    missing = str(etc / "app" / "later.conf.d")
    taken = take_snapshot(store, "orders", [pattern, missing], [])
    assert any("later.conf.d does not exist" in warning for warning in taken.warnings)
    assert taken.summary["files"] == 3  # app.conf, current.conf (symlink), conf.d/limits.conf
    (etc / "app" / "conf.d" / "extra.conf").write_text("new\n")
    (etc / "app" / "conf.d" / "limits.conf").write_text("rate = 1000/s\n")
    Path(missing).mkdir()
    (Path(missing) / "x").write_text("x\n")
    (etc / "app" / "notes.txt").write_text("not matched by the glob\n")

    restore(store)

    assert not (etc / "app" / "conf.d" / "extra.conf").exists()
    assert not Path(missing).exists()
    assert (etc / "app" / "conf.d" / "limits.conf").read_text() == "rate = 10/s\n"
    assert (etc / "app" / "notes.txt").exists()


def test_snapshot_root_inside_a_snapshotted_directory_is_never_snapshotted(tmp_path):
    (tmp_path / "app.conf").write_text("x\n")
    store = str(tmp_path / "snapshots")
    first = take_snapshot(store, "orders", [str(tmp_path)], [])
    assert [e["path"] for e in load_manifest(Path(first.path))["entries"]] == [
        str(tmp_path), str(tmp_path / "app.conf"),
    ]  # fmt: skip
    again = take_snapshot(store, "orders", [str(tmp_path)], [])
    assert not again.changed
    assert not plan_restore(store, "orders", None).changed


# ------------------------------------------------------------------------------------ diffs


def test_restore_diff_shows_text_diffs_binary_sizes_modes_and_key_changes(etc, store, redis_client):
    seed_keys(redis_client)
    take(store, etc, redis_client)
    (etc / "app" / "app.conf").write_text("workers = 1\nqueues = orders,emails\n")
    (etc / "app" / "blob.bin").write_bytes(b"\0\1\2")
    (etc / "app" / "added.conf").write_text("new\n")
    os.chmod(etc / "unit.service", 0o600)
    redis_client.set("app:counter", 1)
    redis_client.delete("app:list")
    redis_client.set("app:added-later", "x")

    plan = plan_restore(store, "orders", None, lambda: redis_client)
    diffs = restore_diff(plan)

    text = next(d for d in diffs if d.get("before_header") == str(etc / "app" / "app.conf"))
    assert (text["before"], text["after"]) == (
        "workers = 1\nqueues = orders,emails\n", "workers = 4\nqueues = orders,emails\n",
    )  # fmt: skip
    prepared = "".join(d.get("prepared", "") for d in diffs)
    assert f"Binary file {etc / 'app' / 'blob.bin'} differs (3 -> 1024 bytes)" in prepared
    assert f"{etc / 'unit.service'}: mode 0600 owner 0:0 -> mode 0644 owner 0:0" in prepared
    assert f"remove (did not exist at snapshot time):\n  {etc / 'app' / 'added.conf'}" in prepared
    assert "restored (changed): app:counter" in prepared
    assert "restored (missing now): app:list" in prepared
    assert "deleted (not in snapshot): app:added-later" in prepared
