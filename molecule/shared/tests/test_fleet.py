"""After every case of a fleet scenario: the fleet ends on the last good release, nothing is paused,
and the ledger counts every task the load generator enqueued: none lost."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import redis

sys.path.insert(0, os.environ.get("MOLECULE_PROJECT_DIRECTORY", str(Path(__file__).resolve().parents[3])))
from tests.support import fleet_marks  # the checkout's test support, once its path is known

testinfra_hosts = ["ansible://workers"]

SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "rq")
BACKEND = "rq" if SCENARIO.endswith("rq") else "celery"
POOL = "shop"
# Where the scenario's cases leave the fleet, and the marks they leave (the verifier env of a scenario
# such as faults/molecule/faults-rq says its own). molecule/<backend>: case 5 deploys 1.4.0, cases 6
# and 7 roll the fleet back to it; case 1 is marked twice (idempotence), case 7 on the RQ fleet only;
# case 8 rolls 1.8.0 back to 1.4.0 on the RQ fleet and keeps it, its feature gate closed, on the Celery one;
# case 10 rolls 1.9.0 back, then deploys its fix 1.9.1 on both.
FINAL_RELEASE = os.environ.get("FLEET_FINAL_RELEASE", "1.9.1")
DRILL = os.environ.get("FLEET_DRILL", "1" if SCENARIO == "rq" else "0") == "1"  # fleet_drill in group_vars
CASES = os.environ.get("FLEET_CASES", "1,1,2,3,4,5,6" + (",7" if DRILL else "") + ",8,9,10").split(",")
ENQUEUED, DONE, FAILED = "queueops:ledger:enqueued", "queueops:ledger:done", "queueops:ledger:failed"
MARKS = fleet_marks.MARKS


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
    replication = client.info("replication")
    if replication["role"] != "master":  # a faults fleet after F7: its Sentinels promoted the replica
        client.close()
        client = redis.Redis(host=replication["master_host"], port=replication["master_port"], decode_responses=True)
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
    starts = [json.loads(raw) for raw in fleet_redis.lrange("queueops:ledger:starts", 0, -1)]

    def runs(tokens):  # which workers of which release started them, when: the reason has to be named
        return [
            {"token": t, "runs": [(s["release"], s["worker"], round(s["t"], 1)) for s in starts if s["token"] == t]}
            for t in sorted(tokens)[:20]
        ]

    duplicated, lost = [t for t, n in done.items() if n > 1], enqueued - set(done)
    counts["duplicated_runs"] = runs(duplicated)
    counts["lost_runs"] = runs(lost)  # started and never finished, or never started
    marks = [json.loads(raw) for raw in fleet_redis.lrange(MARKS, 0, -1)]
    counts["lost_in_failover"] = sorted(failover_losses(fleet_redis, marks, lost, starts))
    if BACKEND == "rq":
        parked = fleet_redis.keys("rq:queue:*:intermediate")
        counts["parked_in_intermediate"] = {key: fleet_redis.llen(key) for key in parked}
        counts["rq_jobs"] = {token: rq_job(fleet_redis, token) for token in sorted([*duplicated, *lost])[:20]}
    # Which replays (task_requeue events) put each of them back, and when.
    events = [fields for _id, fields in fleet_redis.xrange("queueops:events")]
    replays = [(e.get("source"), round(float(e["time"]), 1), json.loads(e.get("ids", "[]"))) for e in events
               if e.get("module") == "task_requeue"]  # fmt: skip
    counts["replays_of"] = {
        token: [(source, at) for source, at, ids in replays if token in ids]
        for token in sorted([*duplicated, *lost])[:20]
    }
    counts["cases"] = fleet_marks.rows(marks, done)
    print(f"\nledger of the {SCENARIO} fleet: {json.dumps(counts)}")
    print(fleet_marks.table(counts["cases"]))
    logs = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), ".cache", "test-logs")
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(logs, f"fleet-{SCENARIO}-ledger.json"), "w") as handle:
        json.dump(counts, handle)
    with open(os.path.join(logs, f"fleet-{SCENARIO}-cases.txt"), "w") as handle:
        in_failover = f" ({len(counts['lost_in_failover'])} by F7's failover)" if counts["lost_in_failover"] else ""
        head = f"{SCENARIO}: {counts['enqueued']} enqueued, {counts['finished']} finished, {counts['lost']} lost"
        handle.write(f"{head}{in_failover}, {counts['duplicated']} duplicated\n{fleet_marks.table(counts['cases'])}\n")
    return counts, enqueued, done, failed


def failover_losses(client: redis.Redis, marks: list[dict], lost: set[str], starts: list[dict]) -> set[str]:
    """The lost tasks a failover may lose (README, "Redis behind Sentinel, and what a failover can
    lose"): enqueues the primary acknowledged that never reached its replica. Each was enqueued during
    F7 (the case that kills the primary: its load generator numbers), never started, and (RQ) left no
    job on the new master, only its token in the ledger, written just before."""
    spans = [(before, after) for before, after in zip(marks, marks[1:]) if after["case"].startswith("F7")]
    if not spans:
        return set()
    numbers = fleet_marks.case_numbers(*spans[0])
    started = {entry["token"] for entry in starts}
    return {
        token
        for token in lost
        if fleet_marks.load_number(token) in numbers
        and token not in started
        and not (BACKEND == "rq" and client.exists(f"rq:job:{token}"))
    }


def rq_job(client: redis.Redis, job_id: str) -> dict:
    """Where RQ keeps a job (its id is its token) and what its results say: why it was lost or ran twice."""
    names = ("status", "origin", "worker_name", "enqueued_at", "started_at")  # not data: a pickle
    found = dict(zip(names, client.hmget(f"rq:job:{job_id}", names)))
    queue = found["origin"] or "orders"
    found["in"] = [
        key
        for key in (f"rq:failed:{queue}", f"rq:finished:{queue}", f"rq:wip:{queue}")
        if any(member.split(":")[0] == job_id for member in client.zrange(key, 0, -1))
    ] + [key for key in (f"rq:queue:{queue}", f"rq:queue:{queue}:intermediate") if job_id in client.lrange(key, 0, -1)]
    results = client.xrange(f"rq:results:{job_id}")
    found["results"] = [
        {"type": fields.get("type"), "worker": fields.get("worker_name"), "exc": exc_text(fields.get("exc_string"))}
        for _id, fields in results
    ]
    return found


def exc_text(encoded: str | None) -> str | None:
    if not encoded:
        return None
    return zlib.decompress(base64.b64decode(encoded)).decode(errors="replace").strip().splitlines()[-1][:160]


def test_no_task_was_lost(ledger):
    counts, enqueued, done, _failed = ledger
    assert counts["enqueued"] > 0
    # The one loss allowed: what the failover of F7 can lose by asynchronous replication (a handful of
    # enqueues of its last instant), each named in the ledger's lost_in_failover.
    unexplained = sorted(enqueued - set(done) - set(counts["lost_in_failover"]))
    assert unexplained == [], f"lost: {unexplained[:20]}; {counts.get('rq_jobs', {})}"
    assert len(counts["lost_in_failover"]) <= 5, f"lost in the failover: {counts['lost_in_failover']}"


def test_every_task_a_bad_release_failed_was_replayed_and_finished(ledger):
    counts, _enqueued, done, failed = ledger
    assert counts["failed_by_a_bad_release"] > 0, "the bad release of case 2 must have failed some tasks"
    assert set(failed) <= set(done), f"failed and never finished: {sorted(set(failed) - set(done))[:20]}"


def test_no_queue_is_left_paused(fleet_redis):
    assert not fleet_redis.exists("rq:suspended")
    assert fleet_redis.hlen("queueops:celery:paused") == 0


def test_no_lease_is_left_held(fleet_redis):
    assert fleet_redis.keys("queueops:lease:*") == []


def test_current_is_the_last_good_release(host):
    assert host.file(f"/opt/queueops/{POOL}/current").linked_to == f"/opt/queueops/{POOL}/releases/{FINAL_RELEASE}"


def test_every_worker_runs_on_the_last_good_release(host):
    for index in (1, 2):
        assert host.service(f"{POOL}@{index}").is_running
    # The workers systemd started (parent pid 1), not Celery's pool processes, which share the command line.
    table = host.check_output("ps -eo ppid=,args=")
    workers = [line.split(None, 1)[1] for line in table.splitlines() if line.split(None, 1)[0] == "1"]
    names = sorted(part for args in workers for part in args.split() if part.startswith(f"{POOL}:"))
    assert [name.split(":")[1] for name in names] == [FINAL_RELEASE, FINAL_RELEASE], table


def test_configuration_is_the_one_of_the_last_good_release(host):
    environment = host.file(f"/etc/queueops/{POOL}.env").content_string
    assert "SAMPLEAPP_REDIS_URL=" in environment
    assert f"SAMPLEAPP_GREETING=hello from {FINAL_RELEASE}" in environment, "1.5.0's configuration was restored away"


def test_every_case_left_its_mark(ledger):
    counts = ledger[0]
    cases = [row["case"].split(":")[0] for row in counts["cases"]]
    assert cases == CASES, counts["cases"]
    assert all(row["enqueued"] > 0 for row in counts["cases"]), "the load generator ran during every case"


# The hosts are what production hosts are: systemd as PID 1, reached over SSH by key, on a network
# with no way off this machine.
def test_systemd_is_pid_1_and_running(host):
    assert host.process.get(pid=1).comm == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), host.run("systemctl --failed --no-legend").stdout


def test_reached_over_ssh_as_root_by_key_only(host):
    # testinfra's ansible backend runs each command through the host the inventory maps it to:
    # an SSH backend here, not the slow fallback (one ansible run per command) nor podman.
    if host.backend.NAME == "ansible":
        inner = host.backend.ansible_runner.get_host(host.backend.host)
        assert inner is not None, "the inventory gives testinfra no direct connection to the host"
        assert inner.backend.NAME == "ssh"
    else:
        assert host.backend.NAME == "ssh"
    assert host.check_output("id -u") == "0"
    sshd = dict(line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line)
    assert sshd["permitrootlogin"] == "without-password"  # prohibit-password, as sshd -T says it
    assert sshd["passwordauthentication"] == "no"


def test_network_is_internal_no_route_off_the_machine(host):
    routes = host.run("ip route show default").stdout.strip()
    assert routes == "", f"the scenario network must have no default route, found: {routes}"


@pytest.mark.skipif(not DRILL, reason="case 7, the drill, runs on the RQ fleet")
def test_the_drill_report_opens_in_chromium_with_its_timeline():
    """Case 7's report, as a person opens it: the page's script drew every phase on every host, and the counts."""
    from tests.support import chromium

    report_dir = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", ".")) / ".cache" / "test-logs" / f"drill-{SCENARIO}"
    report = json.loads((report_dir / "report.json").read_text())
    dom = chromium.dump_dom(report_dir / "report.html")
    assert 'data-rendered="yes"' in dom
    cells = dict(re.findall(r'<td class="n" id="count-(\w+)">([^<]*)</td>', dom))
    assert cells["lost"] == "0" and cells["enqueued"] == str(report["tasks"]["enqueued"])
    drawn = set(re.findall(r'<rect data-phase="(\w+)" data-host="([\w.-]+)"', dom))
    hosts = {h["host"] for h in report["fleet"]}
    # Each host's own phases on every host; what runs once for the fleet (the gate's verdict, the
    # replay) on the host that ran it.
    assert {(p, h) for p in ("switch", "restart", "rollback") for h in hosts} <= drawn
    assert {"gate", "replay", "pause", "resume"} <= {p for p, _h in drawn}
    assert "AWX job 707 by alice" in dom
    shot = chromium.screenshot(report_dir / "report.html", report_dir / "report.png")
    colours = chromium.colour_counts(shot)
    assert colours[chromium.hex_rgb("#e63946")] > 100, "the rollback bands are not on the screen"
    assert colours[chromium.hex_rgb("#8338ec")] > 100, "the gate bands are not on the screen"
