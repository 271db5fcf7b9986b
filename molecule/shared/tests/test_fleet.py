"""After every case of a fleet scenario: the fleet ends on the last good release, nothing is paused,
and the ledger counts every task the load generator enqueued: none lost."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import redis

testinfra_hosts = ["ansible://workers"]

SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "rq")
POOL = "shop"
FINAL_RELEASE = "1.0.0"  # case 4 rolls the fleet back to it
ENQUEUED, DONE, FAILED = "queueops:ledger:enqueued", "queueops:ledger:done", "queueops:ledger:failed"


@pytest.fixture(scope="module")
def fleet_redis() -> redis.Redis:
    address = subprocess.run(
        [
            "podman",
            "inspect",
            "--type",
            "container",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            f"qo-{SCENARIO}-redis",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    client = redis.Redis(host=address, port=6379, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def ledger(fleet_redis):
    """Stop the load generator, wait until the fleet has done what was enqueued, and count."""
    fleet_redis.set("queueops:loadgen:stop", 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        enqueued = fleet_redis.smembers(ENQUEUED)
        done = fleet_redis.hgetall(DONE)
        if enqueued and enqueued <= set(done):
            break
        time.sleep(1)
    enqueued = fleet_redis.smembers(ENQUEUED)
    done = {token: int(n) for token, n in fleet_redis.hgetall(DONE).items()}
    failed = {token: int(n) for token, n in fleet_redis.hgetall(FAILED).items()}
    counts = {
        "enqueued": len(enqueued),
        "finished": len(enqueued & set(done)),
        "failed_by_a_bad_release": len(failed),
        "replayed_and_finished": len(set(failed) & set(done)),
        "lost": len(enqueued - set(done)),
        "duplicated": sum(1 for n in done.values() if n > 1),
    }
    print(f"\nledger of the {SCENARIO} fleet: {json.dumps(counts)}")
    logs = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), ".cache", "test-logs")
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(logs, f"fleet-{SCENARIO}-ledger.json"), "w") as handle:
        json.dump(counts, handle)
    return counts, enqueued, done, failed


def test_no_task_was_lost(ledger):
    counts, enqueued, done, _failed = ledger
    assert counts["enqueued"] > 0
    assert counts["lost"] == 0, f"lost: {sorted(enqueued - set(done))[:20]}"


def test_every_task_a_bad_release_failed_was_replayed_and_finished(ledger):
    counts, _enqueued, done, failed = ledger
    assert counts["failed_by_a_bad_release"] > 0, "the bad release of case 2 must have failed some tasks"
    assert set(failed) <= set(done), f"failed and never finished: {sorted(set(failed) - set(done))[:20]}"


def test_no_queue_is_left_paused(fleet_redis):
    assert not fleet_redis.exists("rq:suspended")
    assert fleet_redis.hlen("queueops:celery:paused") == 0


def test_current_is_the_last_good_release(host):
    assert host.file(f"/opt/queueops/{POOL}/current").linked_to == f"/opt/queueops/{POOL}/releases/{FINAL_RELEASE}"


def test_every_worker_runs_on_the_last_good_release(host):
    for index in (1, 2):
        assert host.service(f"{POOL}@{index}").is_running
    workers = host.check_output(f"pgrep -af ' -(-name|n) {POOL}:' || true")
    names = sorted(part for line in workers.splitlines() for part in line.split() if part.startswith(f"{POOL}:"))
    assert [name.split(":")[1] for name in names] == [FINAL_RELEASE, FINAL_RELEASE], workers


def test_configuration_is_the_one_of_the_last_good_release(host):
    environment = host.file(f"/etc/queueops/{POOL}.env").content_string
    assert "SAMPLEAPP_REDIS_URL=" in environment
    assert "SAMPLEAPP_GREETING" not in environment, "1.0.0's configuration has no greeting: restored"
