"""The Redis side of a restore when Redis refuses all or part of its MULTI/EXEC transaction:
the result says exactly what was restored, and the history and the event stream record it
(real redis-server, the module run through ansible-runner)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import read_jsonl
from ansible_collections.queueops.rollback.plugins.module_utils.snapshot_manifest import canonical_json
from tests.support.runner import run_module


@pytest.fixture
def snapshot(tmp_path: Path, redis_server, redis_client):
    """A snapshot of one file and three keys, then all of them changed."""
    top = tmp_path / "etc"
    top.mkdir()
    (top / "app.conf").write_text("workers = 4\n")
    for name in ("a", "b", "c"):
        redis_client.set(f"cfg:{name}", f"{name}-v1")
    args = {
        "name": "orders",
        "root": str(tmp_path / "snapshots"),
        "paths": [str(top)],
        "redis_keys": ["cfg:*"],
        "redis_url": redis_server.url,
    }
    taken = run_module("config_snapshot", args)
    assert not taken.failed, taken.msg
    (top / "app.conf").write_text("workers = 1\n")
    for name in ("a", "b", "c"):
        redis_client.set(f"cfg:{name}", f"{name}-v2")
    return top, args, Path(taken["snapshot_path"])


def _spoil_dump_of(snapdir: Path, key: str) -> None:
    """Make the DUMP payload of ``key`` one Redis refuses at EXEC time, with checksums that still match,
    as a payload from a newer Redis would be."""
    manifest = json.loads((snapdir / "manifest.json").read_bytes())
    entry = next(e for e in manifest["keys"] if e["name"] == key)
    blob = bytearray((snapdir / "keys.bin").read_bytes())
    blob[entry["offset"] + entry["size"] - 1] ^= 0xFF  # the payload's CRC64
    (snapdir / "keys.bin").write_bytes(bytes(blob))
    entry["sha256"] = hashlib.sha256(blob[entry["offset"] : entry["offset"] + entry["size"]]).hexdigest()
    raw = canonical_json(manifest)
    (snapdir / "manifest.json").write_bytes(raw)
    (snapdir / "manifest.json.sha256").write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")


def _history(args: dict) -> list[dict]:
    return read_jsonl(Path(args["root"], args["name"], "history.jsonl"))


def _last_event(client) -> dict[str, str]:
    ((_id, fields),) = client.xrevrange("queueops:events", count=1)
    return {k.decode(): v.decode() for k, v in fields.items()}


def test_restore_that_redis_applies_in_part_reports_exactly_the_keys_restored_and_records_it(snapshot, redis_client):
    top, args, snapdir = snapshot
    _spoil_dump_of(snapdir, "cfg:b")

    stopped = run_module("config_snapshot", {**args, "state": "restored"})

    assert stopped.failed and stopped.changed
    assert "restored only in part" in stopped.msg and "RESTORE cfg:b" in stopped.msg, stopped.msg
    assert stopped["restored"]["keys_restored"] == ["cfg:a", "cfg:c"]
    assert stopped["restored"]["files_restored"] == [str(top / "app.conf")]
    assert [redis_client.get(f"cfg:{n}") for n in "abc"] == [b"a-v1", b"b-v2", b"c-v1"]
    last = _history(args)[-1]
    assert (last["action"], last["keys_restored"], last["files_restored"]) == ("restore_interrupted", 2, 1)
    event = _last_event(redis_client)
    assert (event["module"], event["action"]) == ("config_snapshot", "snapshot_restore_interrupted")
    assert json.loads(event["restored"])["keys_restored"] == ["cfg:a", "cfg:c"]


def test_restore_transaction_refused_as_a_whole_changes_no_key_and_records_the_interruption(
    snapshot, redis_server, redis_client
):
    top, args, _snapdir = snapshot
    redis_client.acl_setuser(
        "norestore", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all", "-restore"]
    )
    try:
        url = f"redis://norestore:pw@127.0.0.1:{redis_server.port}/0"
        stopped = run_module("config_snapshot", {**args, "state": "restored", "redis_url": url})
    finally:
        redis_client.acl_deluser("norestore")

    assert stopped.failed and stopped.changed  # the file was restored
    assert "no key was changed" in stopped.msg, stopped.msg
    assert stopped["restored"]["keys_restored"] == [] and stopped["restored"]["keys_deleted"] == []
    assert stopped["restored"]["files_restored"] == [str(top / "app.conf")]
    assert [redis_client.get(f"cfg:{n}") for n in "abc"] == [b"a-v2", b"b-v2", b"c-v2"]
    last = _history(args)[-1]
    assert (last["action"], last["keys_restored"], last["files_restored"]) == ("restore_interrupted", 0, 1)
    assert _last_event(redis_client)["action"] == "snapshot_restore_interrupted"

    again = run_module("config_snapshot", {**args, "state": "restored"})  # a user allowed to RESTORE
    assert (again.failed, again["restored"]["keys_restored"]) == (False, ["cfg:a", "cfg:b", "cfg:c"]), again.msg
    assert again["restored"]["files_restored"] == []
