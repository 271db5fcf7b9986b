"""rollout_lease against a real redis-server: one run at a time holds a pool, whatever its hosts.

The Molecule fault scenarios start two deploys of one pool at once, from two controllers (two
ansible-playbook processes) on different hosts, and kill a controller mid-rollback; these tests pin
the module's contract: who wins a race, what a refused run is told, what a dead run leaves behind.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

from ansible_collections.queueops.rollback.plugins.module_utils import lease
from tests.support.runner import run_module, run_playbook

ELSEWHERE = "ctl-2/4242.1000 (AWX job 7)"


def args(redis_server, **extra):
    return {"pool": "orders", "owner": "ctl-1/1.1", "redis_url": redis_server.url, **extra}


def stored(redis_client) -> dict:
    return json.loads(redis_client.get("queueops:lease:orders"))


def test_acquire_then_renew_keeps_since_and_changes_nothing(redis_server, redis_client):
    first = run_module("rollout_lease", args(redis_server, purpose="deploy 1.4.0", ttl=60), diff=True)
    assert not first.failed, first.msg
    assert (first.changed, first["state"]) == (True, "acquired")
    assert first["lease"]["owner"] == "ctl-1/1.1" and first["lease"]["purpose"] == "deploy 1.4.0"
    assert 59 <= first["lease"]["expires_in"] <= 60
    assert "ctl-1/1.1 (deploy 1.4.0)" in first["diff"]["after"] and first["diff"]["before"] == "(free)\n"
    redis_client.pexpire("queueops:lease:orders", 5000)
    again = run_module("rollout_lease", args(redis_server, purpose="deploy 1.4.0, batch 2", ttl=60))
    assert (again.failed, again.changed, again["state"]) == (False, False, "renewed")
    assert again["lease"]["expires_in"] > 50  # the expiry is renewed
    assert stored(redis_client)["since"] == first["lease"]["since"]
    assert stored(redis_client)["purpose"] == "deploy 1.4.0, batch 2"
    events = [e[1] for e in redis_client.xrange("queueops:events")]
    assert [e[b"action"] for e in events] == [b"lease acquired"]  # a renewal is no change


def test_another_run_is_refused_with_who_holds_it_and_the_lease_stays(redis_server, redis_client):
    assert not run_module("rollout_lease", args(redis_server, owner=ELSEWHERE, purpose="rollback 1.2.0")).failed
    before = redis_client.get("queueops:lease:orders")
    refused = run_module("rollout_lease", args(redis_server, purpose="deploy 1.4.0"))
    assert refused.failed
    assert refused.msg.startswith(f"pool orders is leased to another run: {ELSEWHERE} (rollback 1.2.0), for ")
    assert re.search(
        r", expires in 1[78]\d\d s; wait for it to end, or, if that run is dead, let the lease expire", refused.msg
    )
    assert refused["state"] == "held" and refused["lease"]["owner"] == ELSEWHERE
    assert redis_client.get("queueops:lease:orders") == before
    release = run_module("rollout_lease", args(redis_server, state="released"))
    assert release.failed and "not released" in release.msg
    assert redis_client.get("queueops:lease:orders") == before


def test_a_lease_of_a_dead_process_of_this_host_is_taken_over(redis_server, redis_client):
    dead = f"{socket.gethostname()}/999999999.12345"  # no such pid
    redis_client.set("queueops:lease:orders", json.dumps({"owner": dead, "purpose": "rollback 1.2.0"}), ex=600)
    taken = run_module("rollout_lease", args(redis_server, purpose="rollback again"))
    assert not taken.failed, taken.msg
    assert (taken.changed, taken["state"], taken["lease"]["owner"]) == (True, "acquired", "ctl-1/1.1")
    assert taken["previous"]["owner"] == dead
    assert any("that run's process no longer runs" in w for w in taken.get("warnings", []))
    event = redis_client.xrange("queueops:events")[-1][1]
    assert event[b"taken_from"] == dead.encode()


def test_a_live_process_of_this_host_is_not_taken_over(redis_server, redis_client):
    alive = lease.run_owner()  # this test's process: it runs
    redis_client.set("queueops:lease:orders", json.dumps({"owner": alive}), ex=600)
    refused = run_module("rollout_lease", args(redis_server))
    assert refused.failed and alive in refused.msg
    assert stored(redis_client)["owner"] == alive


def test_force_takes_and_releases_another_runs_lease_with_a_warning(redis_server, redis_client):
    redis_client.set("queueops:lease:orders", json.dumps({"owner": ELSEWHERE}), ex=600)
    forced = run_module("rollout_lease", args(redis_server, force=True))
    assert not forced.failed and forced["lease"]["owner"] == "ctl-1/1.1"
    assert any("by force" in w and ELSEWHERE in w for w in forced.get("warnings", []))
    redis_client.set("queueops:lease:orders", json.dumps({"owner": ELSEWHERE}), ex=600)
    released = run_module("rollout_lease", args(redis_server, state="released", force=True))
    assert (released.failed, released.changed, released["state"]) == (False, True, "released")
    assert redis_client.exists("queueops:lease:orders") == 0


def test_release_is_idempotent_and_check_mode_writes_nothing(redis_server, redis_client):
    predicted = run_module("rollout_lease", args(redis_server), check=True)
    assert (predicted.changed, predicted["state"]) == (True, "acquired")
    assert redis_client.exists("queueops:lease:orders") == 0
    assert run_module("rollout_lease", args(redis_server)).changed
    assert run_module("rollout_lease", args(redis_server, state="released"), check=True).changed
    assert redis_client.exists("queueops:lease:orders") == 1
    released = run_module("rollout_lease", args(redis_server, state="released"))
    assert (released.changed, released["state"], released["lease"]) == (True, "released", None)
    again = run_module("rollout_lease", args(redis_server, state="released"))
    assert (again.failed, again.changed, again["state"]) == (False, False, "absent")
    query = run_module("rollout_lease", args(redis_server, state="query"))
    assert (query.changed, query["state"], query["lease"]) == (False, "absent", None)


def test_the_lease_expires_by_itself(redis_client):
    lease.acquire(redis_client, "orders", ELSEWHERE, ttl=0.3)
    try:
        lease.acquire(redis_client, "orders", "ctl-1/1.1", ttl=60)
    except lease.LeaseHeld:
        pass
    else:
        raise AssertionError("a live lease of another run was taken")
    time.sleep(0.5)
    assert lease.acquire(redis_client, "orders", "ctl-1/1.1", ttl=60).state == "acquired"


def test_of_many_controllers_racing_exactly_one_wins(redis_server, redis_client):
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(16)

    def contend(index: int) -> None:
        client = redis_server.client()
        barrier.wait()
        try:
            outcomes[f"ctl-{index}/1.1"] = lease.acquire(client, "orders", f"ctl-{index}/1.1", ttl=60).state
        except lease.LeaseHeld:
            outcomes[f"ctl-{index}/1.1"] = "refused"
        finally:
            client.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [owner for owner, state in outcomes.items() if state == "acquired"]
    assert len(winners) == 1 and list(outcomes.values()).count("refused") == 15
    assert stored(redis_client)["owner"] == winners[0]


def test_owner_and_ttl_follow_the_input_rules(redis_server, redis_client):
    newline = run_module("rollout_lease", args(redis_server, owner="ctl-1\nforged"))
    assert newline.failed and "owner" in newline.msg and "control character" in newline.msg
    zero = run_module("rollout_lease", args(redis_server, ttl=0))
    assert zero.failed and "ttl" in zero.msg
    assert redis_client.exists("queueops:lease:orders") == 0


def test_run_owner_is_one_id_per_run_in_every_task_and_batch(tmp_path: Path):
    play = [
        {
            "hosts": "all",
            "serial": 1,
            "gather_facts": False,
            "tasks": [
                {"ansible.builtin.debug": {"msg": "{{ lookup('queueops.rollback.run_owner') }}"}},
                {"ansible.builtin.debug": {"msg": "{{ lookup('queueops.rollback.run_owner') }}"}, "run_once": True},
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    inventory = "a ansible_connection=local\nb ansible_connection=local\n"
    ids = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        runner = run_playbook(tmp_path / "play.yml", private_data_dir=tmp_path / run, inventory=inventory,
                              extravars={"awx_job_id": 42} if run == "two" else {})  # fmt: skip
        assert runner.status == "successful", runner.stdout.read()
        ids.append({e["event_data"]["res"]["msg"] for e in runner.events if e.get("event") == "runner_on_ok"})
    assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1]
    owner = ids[1].pop()
    assert owner.startswith(socket.gethostname() + "/") and owner.endswith(" (AWX job 42)")
    assert lease.stale_here(ids[0].pop())  # that run's ansible-playbook has ended: its lease is stale
