"""The worker_version module's contract, run through ansible-runner the way AWX runs it."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import FileLock, read_jsonl
from tests.support.releases import make_src, staged_pool
from tests.support.runner import run_module
from tests.support.state import tree_state


def args(tmp_path, **extra):
    return {"root": str(tmp_path / "root"), "pool": "orders", **extra}


def test_stage_and_activate_shows_the_current_diff_then_is_idempotent(tmp_path):
    src = str(make_src(tmp_path, "1.0"))
    first = run_module("worker_version", args(tmp_path, version="1.0", state="active", src=src), diff=True)
    assert not first.failed, first.msg
    assert first.changed
    assert first["current"] == "1.0"
    assert first["actions"][1:] == ["set current to 1.0"]
    assert "None" not in first.msg
    assert first["diff"]["before"] == "current: (none)\n"
    assert first["diff"]["after"] == "current: 1.0\nrelease 1.0: active\n"
    assert os.readlink(tmp_path / "root" / "orders" / "current") == "releases/1.0"
    assert first["current_path"] == str(tmp_path / "root" / "orders" / "current")
    assert first["current_release_path"] == str(tmp_path / "root" / "orders" / "releases" / "1.0")
    assert "mode" not in first.result and "state" not in first.result, "no file facts in the result"

    again = run_module("worker_version", args(tmp_path, version="1.0", state="active", src=src), diff=True)
    assert not again.failed, again.msg
    assert not again.changed
    assert "diff" not in again.result
    assert again.msg == "orders 1.0 is already current"


def test_check_mode_rollback_predicts_the_switch_and_leaves_the_tree_byte_for_byte(tmp_path):
    staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    before = tree_state(tmp_path / "root")
    result = run_module("worker_version", args(tmp_path, version="2.0", state="rolled_back"), check=True, diff=True)
    assert not result.failed, result.msg
    assert result.changed
    assert result["current"] == "1.0"
    assert result["actions"] == ["mark release 2.0 failed", "switch current from 2.0 to 1.0"]
    assert "current: 2.0" in result["diff"]["before"]
    assert "current: 1.0" in result["diff"]["after"]
    assert "release 2.0: failed" in result["diff"]["after"]
    assert tree_state(tmp_path / "root") == before


def test_rolled_back_is_a_state_a_second_run_changes_nothing(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    first = run_module("worker_version", args(tmp_path, version="3.0", state="rolled_back", reason="health gate"))
    assert not first.failed, first.msg
    assert first.changed
    assert (first["current"], first["previous"]) == ("2.0", "1.0")
    assert first.msg == "rolled back orders from 3.0 to 2.0"
    assert {r["version"]: r["state"] for r in first["releases"]}["3.0"] == "failed"
    record = read_jsonl(pool.history_path)[-1]
    assert (record["action"], record["from"], record["to"], record["reason"]) == (
        "rolled_back",
        "3.0",
        "2.0",
        "health gate",
    )
    assert record["user"]

    second = run_module("worker_version", args(tmp_path, version="3.0", state="rolled_back"))
    assert not second.failed, second.msg
    assert not second.changed
    assert second["current"] == "2.0"
    assert second.msg == "orders 3.0 is not current (current is 2.0): nothing to roll back"


def test_bad_version_fails_with_a_clear_message_and_creates_nothing(tmp_path):
    result = run_module(
        "worker_version", args(tmp_path, version="../../etc", state="staged", src=str(make_src(tmp_path, "1.0")))
    )
    assert result.failed
    assert result.msg == "version '../../etc' must not contain '/', '\\' or '..'"
    assert not (tmp_path / "root").exists()

    missing = run_module("worker_version", args(tmp_path, version="1.0", state="active", src=str(tmp_path / "nope")))
    assert missing.failed
    assert missing.msg == f"src {tmp_path / 'nope'} does not exist on the host"
    assert not (tmp_path / "root").exists()


def test_second_concurrent_run_fails_fast_naming_the_holder(tmp_path):
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0",))
    with FileLock(pool.lock_path, "bob: worker_version state=active version=1.0"):
        result = run_module("worker_version", args(tmp_path, version="2.0", state="active"))
    assert result.failed
    assert result.msg.startswith(f"pool orders is busy: {pool.lock_path} is locked by another run: ")
    assert '"owner": "bob: worker_version state=active version=1.0"' in result.msg
    assert os.readlink(pool.current_link) == "releases/1.0"


def test_with_lock_timeout_a_run_waits_for_the_holder_then_goes_on(tmp_path):
    """The module of a killed controller goes on on the host for a while: the next run waits for it."""
    pool = staged_pool(tmp_path, "1.0", "2.0", activate=("1.0",))
    holder = FileLock(pool.lock_path, "bob: worker_rollback from 2.0").__enter__()
    releaser = threading.Timer(2.0, holder.__exit__, (None, None, None))
    releaser.start()
    started = time.monotonic()
    result = run_module("worker_version", args(tmp_path, version="2.0", state="active", lock_timeout=30))
    releaser.join()
    assert not result.failed, result.msg
    assert os.readlink(pool.current_link) == "releases/2.0"
    assert time.monotonic() - started >= 2.0
    pool2 = staged_pool(tmp_path / "b", "1.0", "2.0", activate=("1.0",))
    with FileLock(pool2.lock_path, "bob: worker_version state=active version=1.0"):
        timed_out = run_module(
            "worker_version",
            {**args(tmp_path / "b", version="2.0", state="active"), "lock_timeout": 0.5},
        )
    assert timed_out.failed and "is locked by another run (waited 0.5 s): " in timed_out.msg


def test_new_content_for_an_existing_version_is_refused(tmp_path):
    staged_pool(tmp_path, "1.0")
    other = make_src(tmp_path / "other", "1.0", extra="CHANGED = 1\n")
    result = run_module("worker_version", args(tmp_path, version="1.0", state="staged", src=str(other)))
    assert result.failed
    assert "release 1.0 of pool orders already exists with different content" in result.msg
    assert "releases are immutable: stage a new version" in result.msg


def test_archive_escaping_the_release_is_refused_without_traceback(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    result = run_module("worker_version", args(tmp_path, version="1.0", state="staged", src=str(archive)))
    assert result.failed
    assert result.msg == (
        "archive member '../../outside.txt' escapes the release directory ('..'); refusing to extract"
    )
    assert "Traceback" not in result.stdout
    assert os.listdir(tmp_path / "root" / "orders" / "releases") == []


def test_query_and_prune_report_current_previous_and_releases(tmp_path):
    staged_pool(tmp_path, "1.0", "2.0", "3.0", "4.0", activate=("1.0", "2.0", "3.0", "4.0"))
    pruned = run_module("worker_version", args(tmp_path, state="absent", keep=2))
    assert not pruned.failed, pruned.msg
    assert pruned.msg == "pruned orders: removed 1.0, 2.0"

    query = run_module("worker_version", args(tmp_path, state="query"))
    assert not query.failed, query.msg
    assert not query.changed
    assert (query["current"], query["previous"]) == ("4.0", "3.0")
    assert [(r["version"], r["state"]) for r in query["releases"]] == [("3.0", "superseded"), ("4.0", "active")]
    assert all(r["created"] and r["digest"].startswith("sha256:") for r in query["releases"])
    assert query["releases"][1]["activated"]


def test_queues_are_recorded_beside_the_release_checked_in_check_mode_and_removed_with_it(tmp_path):
    src = str(make_src(tmp_path, "1.0"))
    queues_file = tmp_path / "root" / "orders" / "queues" / "1.0"
    staged = run_module("worker_version", args(tmp_path, version="1.0", state="staged", src=src, queues=["orders"]))
    assert not staged.failed, staged.msg
    assert staged["actions"][-1] == "record the queues of release 1.0: orders"
    assert queues_file.read_text() == "orders\n"
    digest = staged["releases"][0]["digest"]

    new_list = ["orders", "orders@1.0", "orders"]  # a name given twice counts once
    before = tree_state(tmp_path / "root")
    would = run_module("worker_version", args(tmp_path, version="1.0", state="staged", queues=new_list), check=True)
    assert would.changed and would["actions"] == ["record the queues of release 1.0: orders, orders@1.0"]
    assert tree_state(tmp_path / "root") == before

    recorded = run_module("worker_version", args(tmp_path, version="1.0", state="staged", queues=new_list))
    assert recorded.changed and recorded.msg == "orders 1.0 is already staged; recorded its queues"
    assert queues_file.read_text() == "orders orders@1.0\n"
    assert recorded["releases"][0]["digest"] == digest, "the queues are not part of the release's content"
    again = run_module("worker_version", args(tmp_path, version="1.0", state="active", queues=new_list))
    assert again["actions"] == ["set current to 1.0"]

    bad = run_module("worker_version", args(tmp_path, version="1.0", state="staged", queues=["two words"]))
    assert bad.failed and "queue" in bad.msg and "Traceback" not in str(bad.result)
    assert queues_file.read_text() == "orders orders@1.0\n"

    ignored = run_module("worker_version", args(tmp_path, version="1.0", state="failed", queues=["orders"]))
    assert "queues only apply to state=staged or state=active; ignored" in ignored.result.get("warnings", [])

    staged_2 = run_module(
        "worker_version", args(tmp_path, version="2.0", state="active", src=str(make_src(tmp_path, "2.0")))
    )
    assert not staged_2.failed, staged_2.msg
    run_module("worker_version", args(tmp_path, version="3.0", state="active", src=str(make_src(tmp_path, "3.0"))))
    removed = run_module("worker_version", args(tmp_path, version="1.0", state="absent"))
    assert removed["actions"] == ["remove release 1.0"]
    assert not queues_file.exists()
