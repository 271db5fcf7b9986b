"""feature_gate against a real redis-server: open, change, expire and close the gates of a pool."""

from __future__ import annotations

import json
import time

import pytest
import redis

from ansible_collections.queueops.rollback.plugins.module_utils import gates
from tests.support import gate_paths
from tests.support.runner import run_module

KEY = "queueops:gates:orders"


def args(redis_server, **extra):
    return {"pool": "orders", "redis_url": redis_server.url, **extra}


def actions(redis_client) -> list[tuple[str, str]]:
    return [
        (e[b"action"].decode(), e[b"gate"].decode())
        for _id, e in redis_client.xrange("queueops:events")
        if e[b"module"] == b"feature_gate"
    ]


def test_open_then_again_changes_nothing_and_a_new_share_keeps_since(redis_server, redis_client):
    opening = args(redis_server, gate="new_pricing", percentage=10, version="2.5.0")
    first = run_module("feature_gate", opening, diff=True)
    assert not first.failed, first.msg
    assert (first.changed, first["opened"], first["closed"]) == (True, ["new_pricing"], [])
    shown = first["gates"]["new_pricing"]
    assert (shown["open"], shown["percentage"], shown["release"], shown["expires_in"]) == (True, 10, "2.5.0", None)
    assert json.loads(first["diff"]["after"])["new_pricing"]["percentage"] == 10 and first["diff"]["before"] == "{}\n"
    stored = json.loads(redis_client.hget(KEY, "new_pricing"))
    assert (stored["percentage"], stored["release"], stored["expires_at"]) == (10, "2.5.0", None)

    again = run_module("feature_gate", args(redis_server, gate="new_pricing", percentage=10, version="2.5.0"))
    assert (again.failed, again.changed, again["opened"]) == (False, False, [])
    wider = run_module("feature_gate", args(redis_server, gate="new_pricing", percentage=50, version="2.5.0"))
    assert (wider.changed, wider["gates"]["new_pricing"]["percentage"]) == (True, 50)
    assert json.loads(redis_client.hget(KEY, "new_pricing"))["since"] == stored["since"], "open since the first"
    assert actions(redis_client) == [("gate opened", "new_pricing"), ("gate opened", "new_pricing")]


def test_check_mode_says_what_would_change_and_writes_nothing(redis_server, redis_client):
    preview = run_module("feature_gate", args(redis_server, gate="new_pricing"), check=True)
    assert (preview.failed, preview.changed, preview["gates"]["new_pricing"]["percentage"]) == (False, True, 100)
    assert redis_client.exists(KEY) == 0
    assert not run_module("feature_gate", args(redis_server, gate="new_pricing")).failed
    closing = run_module("feature_gate", args(redis_server, gate="new_pricing", state="closed"), check=True)
    assert (closing.changed, closing["closed"]) == (True, ["new_pricing"])
    assert redis_client.hexists(KEY, "new_pricing")
    assert actions(redis_client) == [("gate opened", "new_pricing")]


def test_the_rollback_of_a_release_closes_its_gates_and_only_its_own(redis_server, redis_client):
    for gate, version in (("new_pricing", "2.5.0"), ("batch_invoices", "2.5.0"), ("old_trial", "2.4.0")):
        assert not run_module("feature_gate", args(redis_server, gate=gate, version=version)).failed
    closed = run_module("feature_gate", args(redis_server, state="closed", version="2.5.0"), diff=True)
    assert not closed.failed, closed.msg
    assert (closed.changed, closed["closed"]) == (True, ["batch_invoices", "new_pricing"])
    assert {name: g["open"] for name, g in closed["gates"].items()} == {"batch_invoices": False, "new_pricing": False}
    assert sorted(redis_client.hkeys(KEY)) == [b"old_trial"]
    assert json.loads(closed["diff"]["after"]) == {}
    again = run_module("feature_gate", args(redis_server, state="closed", version="2.5.0"))
    assert (again.failed, again.changed, again["closed"]) == (False, False, [])
    everything = run_module("feature_gate", args(redis_server, state="query"))
    assert list(everything["gates"]) == ["old_trial"] and everything["gates"]["old_trial"]["open"]
    assert not everything.changed


def test_a_gate_that_expires_reads_closed_and_opens_again(redis_server, redis_client):
    opened = run_module("feature_gate", args(redis_server, gate="trial", expires_in=4))
    assert opened.changed and 0 < opened["gates"]["trial"]["expires_in"] <= 4
    gate = gates.read(redis_client, "orders")["trial"]
    assert gates.takes_new_path(gate, "trial", "task-1")
    again = run_module("feature_gate", args(redis_server, gate="trial", expires_in=4))
    assert not again.changed, "a re-run does not push the expiry back"
    assert again["gates"]["trial"]["expires_in"] < opened["gates"]["trial"]["expires_in"]
    time.sleep(max(0.0, gate["expires_at"] - time.time()) + 0.1)
    assert not gates.takes_new_path(gate, "trial", "task-1")
    read = run_module("feature_gate", args(redis_server, gate="trial", state="query"))
    assert (read["gates"]["trial"]["open"], read["gates"]["trial"]["expired"]) == (False, True)
    reopened = run_module("feature_gate", args(redis_server, gate="trial", expires_in=60))
    assert reopened.changed and reopened["gates"]["trial"]["open"]


def test_a_share_picks_the_same_tasks_on_every_read():
    gate = {"percentage": 10, "release": "2.5.0", "since": 0, "expires_at": None}
    chosen = [key for key in (f"task-{i}" for i in range(2000)) if gates.takes_new_path(gate, "new_pricing", key)]
    assert 150 < len(chosen) < 250
    assert chosen == [k for k in (f"task-{i}" for i in range(2000)) if gates.takes_new_path(gate, "new_pricing", k)]
    assert not gates.takes_new_path(None, "new_pricing", "task-1")
    assert not gates.takes_new_path({**gate, "percentage": 0}, "new_pricing", chosen[0])


def test_percentage_zero_closes_and_a_value_not_ours_reads_closed(redis_server, redis_client):
    assert not run_module("feature_gate", args(redis_server, gate="new_pricing")).failed
    shut = run_module("feature_gate", args(redis_server, gate="new_pricing", percentage=0))
    assert (shut.changed, shut["closed"], redis_client.hexists(KEY, "new_pricing")) == (True, ["new_pricing"], False)
    redis_client.hset(KEY, "garbage", "not json")
    read = run_module("feature_gate", args(redis_server, state="query"))
    assert read["gates"]["garbage"]["open"] is False
    cleared = run_module("feature_gate", args(redis_server, gate="garbage", state="closed"))
    assert cleared["closed"] == ["garbage"] and redis_client.exists(KEY) == 0


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"gate": "new_pricing", "percentage": 101}, "percentage must be between 0 and 100, not 101"),
        ({"gate": "a/b"}, "gate 'a/b' must not contain '/'"),
        ({"gate": "x", "version": "2.5.0:1"}, "version '2.5.0:1' must not contain ':'"),
        ({}, "state=open needs the gate to open"),
        ({"gate": "x", "state": "closed", "expires_in": 10}, "expires_in is for state=open only"),
        ({"gate": "x", "expires_in": 0}, "expires_in must be more than 0 seconds"),
        ({"state": "query", "version": "2.5.0"}, "leave version out"),
    ],
)
def test_bad_input_is_refused_in_words(redis_server, redis_client, extra, words):
    refused = run_module("feature_gate", args(redis_server, **extra))
    assert refused.failed and words in refused.msg, refused.msg
    assert "Traceback" not in refused.msg and redis_client.exists(KEY) == 0


def test_the_opened_event_carries_since_and_a_task_is_judged_by_when_it_read_the_gate(redis_server, redis_client):
    opened = run_module("feature_gate", args(redis_server, gate="new_totals", percentage=50, version="1.8.0"))
    assert not opened.failed, opened.msg
    since = json.loads(redis_client.hget(KEY, "new_totals"))["since"]
    (event,) = [e for _id, e in redis_client.xrange("queueops:events") if e[b"action"] == b"gate opened"]
    assert float(event[b"since"]) == since <= float(event[b"time"]), "since is taken before the write, the event after"
    starts = [
        {"token": "began-before-read-after", "t": since - 0.005, "gt": since + 0.001, "gates": ["new_totals"]},
        {"token": "read-before-the-opening", "t": since - 0.010, "gt": since - 0.005, "gates": ["new_totals"]},
        {"token": "old-path", "t": since - 1.0},
    ]
    redis_client.rpush(gate_paths.STARTS, *(json.dumps(start) for start in starts))
    measured = gate_paths.measure(redis.Redis.from_url(redis_server.url, decode_responses=True), "orders", "new_totals")
    assert (measured["opened_at"], measured["new_path"], measured["before_open"]) == (since, 2, 1)
