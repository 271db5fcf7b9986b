"""Recovery time of the rollout role's rollback against an ansistrano-style one, on one container fleet.

Run: .venv/bin/python benchmarks/bench_rollback.py [rq] [celery]      (default: both; ~6 min each)

For each backend, Molecule builds the fleet of benchmarks/molecule/bench-<backend> (Redis and 3
systemd worker hosts reached over SSH, 2 workers each, the load generator at 20 tasks/s, 1.0.0
deployed), then benchmarks/rollback/bench.yml runs two rounds of ours (a deploy of a bad release
whose health gate fails, rolling back by itself) and two of the baseline (symlink swap, systemctl
restart, wait until active), over the same SSH connections. Times come from the ledger, where
every task records which worker of which release started it and when:

  (a) from the verdict until the bad release takes no more tasks: the last task a worker of the
      bad release started after the verdict (0 when none did);
  (b) from the verdict until every worker consumes on the previous release: the first task of
      each of the 6 workers of 1.0.0 that started after the verdict, the last of those six.

Goals: (a) <= 0.5 s; (b) <= 1.0x the baseline's (b), medians of the rounds.

Then a gate flip: 1.8.0 fails the health gate judged with its feature gate open, and the gate is
closed at the verdict; the release stays. Measured beside (a) and (b):

  (g) from that verdict until no task takes the new path: the last task that took it, after the
      verdict (0 when none did), from the ledger (tests/support/gate_paths.py). No goal: printed
      beside the release rollback's times.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import gate_paths  # noqa: E402

OUT = REPO / ".cache" / "bench"
STARTS, EVENTS = "queueops:ledger:starts", "queueops:events"
PREVIOUS, WORKERS = "1.0.0", 6
OURS = ("1.2.0", "1.2.1")  # the bad releases of our rounds (a release marked failed is not deployed again)
BASELINE_BAD, BASELINE_ROUNDS = "1.2.0", (1, 2)
GOAL_A, GOAL_RATIO = 0.5, 1.0
GATE_POOL, GATE = "shop", "new_totals"  # the gate-flip round's pool and feature gate


def molecule(env: dict[str, str], action: str, scenario: str, check: bool = True) -> None:
    print(f"==> molecule {action} -s {scenario}", flush=True)
    log = OUT / f"{scenario}-{action}.log"
    with log.open("w") as handle:
        command = ["molecule", action, "-s", scenario]
        done = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"molecule {action} -s {scenario} failed: see {log}")


def redis_of(scenario: str) -> redis.Redis:
    address = subprocess.run(
        ["podman", "inspect", "--type", "container", "--format",
         "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", f"qo-{scenario}-redis"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return redis.Redis(host=address, port=6379, decode_responses=True)


def times(starts: list[dict], verdict: float, bad: str) -> dict[str, float | int | None]:
    """(a) and (b) of one round from the ledger's start entries (see the module docstring). The round
    ends when every worker of the previous release consumes: a later round's bad release is not its."""
    first: dict[str, float] = {}
    for entry in starts:
        if entry["release"] == PREVIOUS and verdict < entry["t"] < verdict + 60:
            first.setdefault(entry["worker"], entry["t"])
    firsts = sorted(first.values())
    consuming = firsts[WORKERS - 1] if len(firsts) >= WORKERS else None
    end = consuming if consuming is not None else verdict + 20
    bad_after = [e["t"] for e in starts if e["release"] == bad and verdict < e["t"] <= end]
    return {
        "a_no_more_bad_tasks_s": round(max(bad_after) - verdict, 3) if bad_after else 0.0,
        "bad_tasks_after_verdict": len(bad_after),
        "b_all_workers_consume_s": round(consuming - verdict, 3) if consuming is not None else None,
        "previous_release_workers_seen": len(firsts),
    }


def our_verdicts(events: list[dict[str, str]]) -> dict[str, float]:
    """The last health-gate verdict of each bad release of our rounds, from the event stream."""
    verdicts: dict[str, float] = {}
    for fields in events:
        if fields.get("module") == "rollout_check" and fields.get("release") in OURS:
            verdicts[fields["release"]] = float(fields["time"])
    return verdicts


def bench(backend: str) -> dict:
    scenario = f"bench-{backend}"
    out = OUT / scenario
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MOLECULE_GLOB": "benchmarks/molecule/*/molecule.yml",
        "BENCH_OUT": str(out),
        "NO_COLOR": "1",
    }
    molecule(env, "destroy", scenario, check=False)
    try:
        molecule(env, "create", scenario)
        molecule(env, "prepare", scenario)
        molecule(env, "converge", scenario)
        client = redis_of(scenario)
        gate = gate_paths.measure(client, GATE_POOL, GATE)
        starts = [json.loads(raw) for raw in client.lrange(STARTS, 0, -1)]
        events = [fields for _id, fields in client.xrange(EVENTS)]
        # Kept beside the result, so the times can be read again after the fleet is gone.
        (out / "ledger-starts.json").write_text(json.dumps(starts))
        (out / "events.json").write_text(json.dumps(events))
        (out / "gate.json").write_text(json.dumps(gate))
    finally:
        molecule(env, "destroy", scenario, check=False)
    verdicts = our_verdicts(events)
    ours = [times(starts, verdicts[bad], bad) for bad in OURS if bad in verdicts]
    baseline = [
        times(starts, float((out / f"baseline-{n}.verdict").read_text()), BASELINE_BAD) for n in BASELINE_ROUNDS
    ]
    flip = {**gate, "g_no_more_new_path_s": max(0.0, gate["last_new_path_s"] or 0.0)}
    return {"backend": backend, "ours": ours, "baseline": baseline, "gate_flip": flip}


def median(rounds: list[dict], key: str) -> float | None:
    values = [r[key] for r in rounds if r[key] is not None]
    return statistics.median(values) if len(values) == len(rounds) and values else None


def main(argv: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    backends = argv or ["rq", "celery"]
    ok, results = True, []
    for backend in backends:
        result = bench(backend)
        a = median(result["ours"], "a_no_more_bad_tasks_s")
        b = median(result["ours"], "b_all_workers_consume_s")
        base_b = median(result["baseline"], "b_all_workers_consume_s")
        ratio = round(b / base_b, 2) if b is not None and base_b else None
        result.update(a_median_s=a, b_median_s=b, baseline_b_median_s=base_b, b_ratio=ratio)
        results.append(result)
        print(f"\n{backend}: rounds, ours:     {json.dumps(result['ours'])}")
        print(f"{backend}: rounds, baseline: {json.dumps(result['baseline'])}")
        print(f"{backend}: (a) verdict -> the bad release takes no more tasks: {a} s (goal <= {GOAL_A} s)")
        print(
            f"{backend}: (b) verdict -> every worker consumes on {PREVIOUS}: ours {b} s, "
            f"ansistrano-style {base_b} s, ratio {ratio} (goal <= {GOAL_RATIO})"
        )
        flip = result["gate_flip"]
        print(
            f"{backend}: (g) verdict -> no task takes the new path, gate flip: {flip['g_no_more_new_path_s']} s "
            f"({flip['new_path']} tasks took it, {flip['after_close']} after the close); release rollback: "
            f"(a) {a} s, (b) {b} s"
        )
        ok &= flip["verdict_at"] is not None and flip["new_path"] > 0 and flip["after_close"] == 0
        ok &= a is not None and a <= GOAL_A and ratio is not None and ratio <= GOAL_RATIO
    (OUT / "rollback.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nbench_rollback: {'goals met' if ok else 'GOALS MISSED'} (details in {OUT / 'rollback.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
