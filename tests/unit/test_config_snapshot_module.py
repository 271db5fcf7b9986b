"""The config_snapshot module's contract, run through ansible-runner as AWX runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.redis_server import free_port
from tests.support.runner import run_module
from tests.support.state import key_dumps, tree_state


@pytest.fixture
def setup(tmp_path: Path, redis_server, redis_client):
    top = tmp_path / "etc" / "orders"
    (top / "conf.d").mkdir(parents=True)
    (top / "app.conf").write_text("workers = 4\n")
    (top / "conf.d" / "limits.conf").write_text("rate = 10/s\n")
    os.chown(top / "conf.d" / "limits.conf", 1234, 1234)
    redis_client.set("orders:gate:router", "v1", ex=600)
    redis_client.hset("orders:routing", mapping={f"t{i}": "q" for i in range(150)})
    args = {
        "name": "orders",
        "root": str(tmp_path / "snapshots"),
        "paths": [str(top)],
        "redis_keys": ["orders:*"],
        "redis_url": redis_server.url,
        "allowed_roots": [str(tmp_path / "etc")],
    }
    return top, args


def events(client) -> list[dict]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange("queueops:events")
        if fields[b"module"] == b"config_snapshot"
    ]


def test_take_check_mode_then_take_then_take_again_is_unchanged(setup, redis_client):
    _top, args = setup
    checked = run_module("config_snapshot", {**args, "reason": "deploy 2"}, check=True, diff=True)
    assert (checked.failed, checked.changed) == (False, True), checked.msg
    assert checked["diff"][0]["prepared"].startswith("first snapshot:\n  file added: ")
    assert not Path(args["root"]).exists()

    taken = run_module("config_snapshot", {**args, "reason": "deploy 2"})
    assert (taken.failed, taken.changed) == (False, True), taken.msg
    assert taken["snapshot"]["files"] == 2 and taken["snapshot"]["keys"] == 2
    assert Path(taken["path"], "manifest.json").is_file()

    again = run_module("config_snapshot", args)
    assert (again.failed, again.changed, again["id"]) == (False, False, taken["id"])
    assert [(e["action"], e["id"], e["name"]) for e in events(redis_client)] == [
        ("snapshot_taken", taken["id"], "orders")
    ]


def test_restore_check_mode_diff_then_restore_then_restore_again(setup, redis_client):
    top, args = setup
    taken = run_module("config_snapshot", args)
    (top / "app.conf").write_text("workers = 1\n")
    (top / "stray.conf").write_text("new\n")
    redis_client.set("orders:gate:router", "v2")
    redis_client.set("orders:added", "x")
    files_before, keys_before = tree_state(top), key_dumps(redis_client)
    restore_args = {**args, "state": "restored", "id": taken["id"]}

    checked = run_module("config_snapshot", restore_args, check=True, diff=True)
    assert (checked.failed, checked.changed) == (False, True), checked.msg
    assert (tree_state(top), key_dumps(redis_client)) == (files_before, keys_before)
    text = next(d for d in checked["diff"] if d.get("before_header") == str(top / "app.conf"))
    assert (text["before"], text["after"]) == ("workers = 1\n", "workers = 4\n")
    assert checked["restored"]["files_removed"] == [str(top / "stray.conf")]
    assert checked["restored"]["keys_deleted"] == ["orders:added"]
    assert checked["restored"]["keys_restored"] == ["orders:gate:router"]

    restored = run_module("config_snapshot", restore_args)
    assert (restored.failed, restored.changed) == (False, True), restored.msg
    assert (top / "app.conf").read_text() == "workers = 4\n"
    assert not (top / "stray.conf").exists()
    assert redis_client.get("orders:gate:router") == b"v1" and redis_client.ttl("orders:gate:router") > 0
    assert redis_client.exists("orders:added") == 0

    again = run_module("config_snapshot", {**args, "state": "restored"})  # latest = the same one
    assert (again.failed, again.changed) == (False, False), again.msg
    assert [e["action"] for e in events(redis_client)] == ["snapshot_taken", "snapshot_restored"]


def test_corrupted_snapshot_is_refused_with_nothing_changed(setup, redis_client):
    top, args = setup
    taken = run_module("config_snapshot", args)
    blob = Path(taken["path"], "files.bin")
    blob.write_bytes(blob.read_bytes().replace(b"workers = 4", b"workers = 5"))
    (top / "app.conf").write_text("drifted\n")
    redis_client.set("orders:gate:router", "v2")
    files_before, keys_before = tree_state(top), key_dumps(redis_client)

    refused = run_module("config_snapshot", {**args, "state": "restored"})

    assert refused.failed
    assert refused.msg.startswith(f"snapshot orders/{taken['id']} is corrupt: the copy of ")
    assert (tree_state(top), key_dumps(redis_client)) == (files_before, keys_before)


def test_bad_input_is_refused_in_words(setup, tmp_path):
    top, args = setup
    unknown = run_module("config_snapshot", {**args, "state": "restored", "id": "20200101T000000Z-00000000"})
    assert unknown.failed and unknown.msg.startswith("snapshot '20200101T000000Z-00000000' of 'orders' not found")

    outside = run_module("config_snapshot", {**args, "paths": [str(top), "/etc/hostname"]})
    assert outside.failed and outside.msg.startswith("path /etc/hostname is outside allowed_roots")

    port = free_port()
    unreachable = run_module("config_snapshot", {**args, "redis_url": f"redis://127.0.0.1:{port}/0"})
    # The address is masked by Ansible because redis_url is no_log (it may carry a password).
    assert unreachable.failed and unreachable.msg.startswith("Cannot reach Redis at ")
    assert f"connecting to 127.0.0.1:{port}" in unreachable.msg

    bad_name = run_module("config_snapshot", {**args, "name": "../orders"})
    assert bad_name.failed and "name '../orders' must not contain '/'" in bad_name.msg


def test_keep_prunes_the_oldest_query_lists_and_absent_deletes(setup):
    top, args = setup
    files_only = {k: v for k, v in args.items() if k not in ("redis_keys", "redis_url")}
    first = run_module("config_snapshot", {**files_only, "reason": "r0"})
    (top / "app.conf").write_text("workers = 8\n")
    second = run_module("config_snapshot", {**files_only, "reason": "r1", "keep": 1})
    assert (second.changed, second["deleted"]) == (True, [first["id"]])

    listed = run_module("config_snapshot", {**files_only, "state": "query"})
    assert [(s["id"], s["reason"], s["files"], s["dirs"], s["keys"]) for s in listed["snapshots"]] == [
        (second["id"], "r1", 2, 2, 0)
    ]
    deleted = run_module("config_snapshot", {**files_only, "state": "absent", "id": second["id"]})
    assert (deleted.changed, deleted["deleted"]) == (True, [second["id"]])
    assert [p.name for p in Path(args["root"], "orders").iterdir() if not p.name.startswith(".")] == ["history.jsonl"]
