"""worker_rollback's contract where no systemd is needed: what check mode predicts, what it refuses
before any worker stops, and its input rules. The Molecule fleets (molecule/rq, molecule/celery) run
it for real, with systemd in the hosts, on every automatic and explicit rollback."""

from __future__ import annotations

import pytest

from tests.support.releases import staged_pool
from tests.support.runner import run_module
from tests.support.state import tree_state


def args(tmp_path, **extra):
    return {"root": str(tmp_path / "root"), "pool": "orders", "snapshot_root": str(tmp_path / "snaps"), **extra}


def test_check_mode_predicts_stop_switch_and_start_in_that_order_and_touches_nothing(tmp_path):
    staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    before = tree_state(tmp_path / "root")
    result = run_module("worker_rollback", args(tmp_path, version="2.0"), check=True, diff=True)
    assert not result.failed, result.msg
    assert result.changed
    assert result["actions"] == [
        "stop orders.target",
        "mark release 2.0 failed",
        "switch current from 2.0 to 1.0",
        "start orders.target",
    ]
    assert (result["current"], result["rolled_back"], result["stopped"]) == ("1.0", True, True)
    assert result["started"] == ["orders.target"]
    assert "current: 1.0" in result["diff"]["after"]
    assert "no configuration snapshot orders-1.0" in " ".join(result.result.get("warnings", []))
    assert tree_state(tmp_path / "root") == before


def test_no_release_to_go_back_to_is_refused_before_any_worker_stops(tmp_path):
    staged_pool(tmp_path, "1.0", activate=("1.0",))
    before = tree_state(tmp_path / "root")
    result = run_module("worker_rollback", args(tmp_path, version="1.0", units=["orders@1.service"]))
    assert result.failed
    assert "no release of pool orders was active before 1.0" in result.msg
    assert (result["stopped"], result["started"], result["actions"]) == (False, [], [])
    after = tree_state(tmp_path / "root")
    after.pop("orders/.lock", None)  # the pool lock it held, empty
    assert after == before


def test_a_failed_to_version_is_refused_before_any_worker_stops(tmp_path):
    staged_pool(tmp_path, "1.0", "2.0", "3.0", activate=("1.0", "2.0", "3.0"))
    marked = {"root": str(tmp_path / "root"), "pool": "orders", "version": "1.0", "state": "failed"}
    assert not run_module("worker_version", marked).failed
    result = run_module("worker_rollback", args(tmp_path, version="3.0", to_version="1.0"))
    assert result.failed
    assert "to_version 1.0 is marked failed" in result.msg
    assert result["stopped"] is False


@pytest.mark.parametrize(
    ("units", "words"),
    [
        ([], "units must be a non-empty list"),
        (["--now"], "is not a systemd unit name"),
        (["orders target"], "is not a systemd unit name"),
    ],
)
def test_unit_names_are_checked_before_anything_runs(tmp_path, units, words):
    staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    result = run_module("worker_rollback", args(tmp_path, version="2.0", units=units))
    assert result.failed
    assert words in result.msg


def test_pool_and_version_follow_the_one_name_rule(tmp_path):
    result = run_module("worker_rollback", args(tmp_path, version="../2.0"))
    assert result.failed
    assert "version" in result.msg and ".." in result.msg


def test_with_stop_grace_the_switch_comes_while_the_halted_workers_exit_and_the_units_stop_after(tmp_path):
    staged_pool(tmp_path, "1.0", "2.0", activate=("1.0", "2.0"))
    before = tree_state(tmp_path / "root")
    result = run_module("worker_rollback", args(tmp_path, version="2.0", stop_grace=30), check=True)
    assert not result.failed, result.msg
    assert result["actions"] == [
        "mark release 2.0 failed",
        "switch current from 2.0 to 1.0",
        "stop orders.target",
        "start orders.target",
    ]
    assert (result["current"], result["stopped"], result["started"]) == ("1.0", True, ["orders.target"])
    assert tree_state(tmp_path / "root") == before
