"""The config_snapshot module's contract, run through ansible-runner as AWX runs it (real files, real Redis)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.queueops.rollback.plugins.modules import config_snapshot
from tests.support.paths import COLLECTIONS_PATH
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


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "snapshots")


def events(client) -> list[dict]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange("queueops:events")
        if fields[b"module"] == b"config_snapshot"
    ]


def test_take_in_check_mode_writes_nothing_and_taking_unchanged_content_again_is_unchanged(setup, redis_client):
    _top, args = setup
    checked = run_module("config_snapshot", {**args, "reason": "deploy 2"}, check=True, diff=True)
    assert (checked.failed, checked.changed) == (False, True), checked.msg
    assert checked["diff"][0]["prepared"].startswith("first snapshot:\n  file added: ")
    assert not Path(args["root"]).exists()

    taken = run_module("config_snapshot", {**args, "reason": "deploy 2"})
    assert (taken.failed, taken.changed) == (False, True), taken.msg
    assert taken["snapshot"]["files"] == 2 and taken["snapshot"]["keys"] == 2
    assert Path(taken["snapshot_path"], "manifest.json").is_file()

    again = run_module("config_snapshot", args)
    assert (again.failed, again.changed, again["id"]) == (False, False, taken["id"])
    assert [(e["action"], e["id"], e["name"]) for e in events(redis_client)] == [
        ("snapshot_taken", taken["id"], "orders")
    ]


def test_restore_in_check_mode_changes_nothing_then_restores_and_a_second_restore_is_unchanged(setup, redis_client):
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


def test_restore_refuses_corrupted_snapshot_and_changes_nothing(setup, redis_client):
    top, args = setup
    taken = run_module("config_snapshot", args)
    blob = Path(taken["snapshot_path"], "files.bin")
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
    assert unreachable.failed and unreachable.msg.startswith(f"Cannot reach Redis at 127.0.0.1:{port}/0")

    bad_name = run_module("config_snapshot", {**args, "name": "../orders"})
    assert bad_name.failed and "name '../orders' must not contain '/'" in bad_name.msg


def test_keep_prunes_the_oldest_query_lists_the_rest_and_absent_deletes(setup):
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


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


def test_take_and_restore_of_non_utf8_file_names_succeed_with_escaped_names(tmp_path, store):
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


def test_a_path_with_a_nul_byte_is_refused_in_words_for_take_and_restore(tmp_path):
    for state in ("present", "restored"):
        result = run_module(
            "config_snapshot",
            {"name": "app", "root": str(tmp_path / "store"), "paths": ["/etc/app\x00.conf"], "state": state},
        )
        assert result.failed
        assert result.msg == "paths cannot contain a NUL byte: '/etc/app\\x00.conf'"
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------ bounds, results, no redis-py

# Keys every Ansible task result may carry besides what the module documents.
_ANSIBLE_KEYS = {"changed", "failed", "msg", "diff", "warnings", "invocation", "exception", "_ansible_no_log"}


def _documented() -> dict:
    return yaml.safe_load(config_snapshot.RETURN)


def test_every_return_entry_has_a_sample():
    for name, spec in _documented().items():
        assert "sample" in spec, name
        for inner, inner_spec in spec.get("contains", {}).items():
            assert "sample" in inner_spec, f"{name}.{inner}"


def test_results_carry_what_return_documents_and_no_file_facts(setup):
    _top, args = setup
    documented = set(_documented())
    runs = {
        "present": run_module("config_snapshot", args),
        "present again": run_module("config_snapshot", {**args, "keep": 1}),
        "restored": run_module("config_snapshot", {**args, "state": "restored"}),
        "query": run_module("config_snapshot", {**args, "state": "query"}),
        "absent": run_module("config_snapshot", {**args, "state": "absent"}),
    }
    for label, result in runs.items():
        assert not result.failed, (label, result.msg)
        extra = set(result.result) - documented - _ANSIBLE_KEYS
        assert not extra, (label, extra)  # state, mode, uid, size, owner... were added for a "path" key
    assert runs["present"]["snapshot_path"].endswith(runs["present"]["id"])
    assert runs["present"]["previous_id"] is None and runs["present again"]["previous_id"] == runs["present"]["id"]


def test_a_failed_module_result_has_no_traceback_and_its_message_no_none(tmp_path):
    """ansible-core 2.19 adds ``exception: (traceback unavailable)`` to every failed task result on the
    controller; the module's own output carries none."""
    args = {"ANSIBLE_MODULE_ARGS": {"name": "orders", "root": str(tmp_path / "store"), "state": "restored"}}
    (tmp_path / "args.json").write_text(json.dumps(args))
    module = "ansible_collections.queueops.rollback.plugins.modules.config_snapshot"
    env = {**os.environ, "PYTHONPATH": str(COLLECTIONS_PATH)}
    out = subprocess.run(
        [sys.executable, "-m", module, str(tmp_path / "args.json")], capture_output=True, text=True, env=env
    )
    result = json.loads(out.stdout)
    assert result["failed"] and result["msg"] == f"no snapshot of 'orders' under {tmp_path / 'store'}"
    assert "exception" not in result


def test_proc_glob_is_refused_in_words_at_once_and_nothing_is_written(tmp_path):
    result = run_module("config_snapshot", {"name": "host", "root": str(tmp_path / "store"), "paths": ["/proc/**"]})
    assert result.failed
    assert result.msg == "path /proc is on a pseudo-filesystem (/proc): it is not configuration"
    assert not (tmp_path / "store").exists()


def test_max_files_crossed_is_refused_in_words_and_nothing_is_written(setup):
    _top, args = setup
    refused = run_module("config_snapshot", {**args, "max_files": 2})
    assert refused.failed and refused.msg.startswith("more than max_files=2 files, directories and links")
    assert "nothing was written" in refused.msg
    assert not Path(args["root"]).exists()


@pytest.mark.parametrize(("option", "value"), [("max_files", 0), ("max_bytes", -5)])
def test_limits_below_one_are_refused_in_words(tmp_path, option, value):
    result = run_module(
        "config_snapshot", {"name": "n", "root": str(tmp_path / "store"), "paths": ["/etc"], option: value}
    )
    assert result.failed and result.msg == f"{option} must be 1 or more, not {value}"


def test_files_only_snapshot_needs_no_redis_py_and_reports_file_errors_as_file_errors(tmp_path):
    shadow = tmp_path / "no-redis-py"
    (shadow / "redis").mkdir(parents=True)
    (shadow / "redis" / "__init__.py").write_text("raise ImportError('redis-py is not installed here')\n")
    hidden = {"PYTHONPATH": str(shadow)}
    (tmp_path / "app.conf").write_text("x\n")
    args = {"name": "n", "root": str(tmp_path / "store"), "paths": [str(tmp_path / "app.conf")]}

    with_keys = run_module("config_snapshot", {**args, "redis_keys": ["cfg:*"]}, envvars=hidden)
    assert with_keys.failed and "required Python library (redis)" in with_keys.msg, with_keys.msg  # really hidden

    taken = run_module("config_snapshot", args, envvars=hidden)
    assert (taken.failed, taken.changed) == (False, True), taken.msg

    # Connection options from a play's module_defaults reach a snapshot of files on a host without
    # redis-py: it is taken, and only its event is not recorded.
    for connection in (
        {"redis_url": "redis://10.0.0.9:6379/0"},
        {"sentinel_hosts": ["10.0.0.9:26379"], "sentinel_service": "q"},
    ):
        (tmp_path / "app.conf").write_text(f"changed for {connection}\n")
        again = run_module("config_snapshot", {**args, **connection}, envvars=hidden)
        assert (again.failed, again.changed) == (False, True), again.msg
        assert any("event not recorded" in w and "redis" in w for w in again.result.get("warnings", [])), again.result

    (tmp_path / "not-a-dir").write_text("a file where the store should be\n")
    broken = run_module("config_snapshot", {**args, "root": str(tmp_path / "not-a-dir")}, envvars=hidden)
    assert broken.failed
    assert broken.msg.startswith("present of snapshot n failed: ") and "Redis" not in broken.msg, broken.msg
    assert "None" not in broken.msg
