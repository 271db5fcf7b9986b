"""Fleet scaling: the rollback of 12 worker hosts against 3, same roles, forks = hosts.

Run: .venv/bin/python benchmarks/bench_scaling.py            (~25 min: two fleets, one after the other)

For each size, Molecule builds the fleet of benchmarks/molecule/scale-rq-<n> (Redis and n systemd
worker hosts reached over SSH, 2 RQ workers each, the load generator, 1.0.0 deployed), then
benchmarks/scaling/rounds.yml deploys two bad releases in turn; each fails its health gate and rolls
back by itself. A round's rollback time runs from its verdict (the rollout_check event) until the
play has seen the rollback through. The controller's CPU time (ansible-playbook, its forks and their
SSH clients) is measured over the converge.

Goal: the median rollback of 12 hosts <= 1.5x that of 3. Every container shares this machine's
cores, so the hosts' own work (modules, systemctl, workers starting) runs side by side here as it
would not on real hosts: the script also prints the controller's CPU per host, the part that grows
with the fleet on real hosts too.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_rollback import EVENTS, OUT, molecule, redis_of  # noqa: E402 - the same fleet helpers

SIZES, BAD = (3, 12), ("1.2.0", "1.2.1")
GOAL_RATIO = 1.5


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def round_times(events: list[dict[str, str]], out: Path) -> dict[str, float]:
    """Seconds from each bad release's last verdict until its rollback ended."""
    verdicts = {
        f["release"]: float(f["time"]) for f in events if f.get("module") == "rollout_check" and f.get("release") in BAD
    }
    return {bad: round(float((out / f"ended-{bad}").read_text()) - verdicts[bad], 2) for bad in BAD if bad in verdicts}


def bench(size: int) -> dict:
    scenario = f"scale-rq-{size}"
    out = OUT / scenario
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("ended-*"):
        stale.unlink()
    env = {**os.environ, "MOLECULE_GLOB": "benchmarks/molecule/*/molecule.yml", "BENCH_OUT": str(out), "NO_COLOR": "1"}
    molecule(env, "destroy", scenario, check=False)
    try:
        molecule(env, "create", scenario)
        started = time.monotonic()
        molecule(env, "prepare", scenario)
        prepare_s = time.monotonic() - started
        cpu, started = children_cpu(), time.monotonic()
        molecule(env, "converge", scenario)
        converge_s, converge_cpu = time.monotonic() - started, children_cpu() - cpu
        events = [fields for _id, fields in redis_of(scenario).xrange(EVENTS)]
        (out / "events.json").write_text(json.dumps(events))
    finally:
        molecule(env, "destroy", scenario, check=False)
    rounds = round_times(events, out)
    return {
        "hosts": size,
        "rollback_s": rounds,
        "rollback_median_s": statistics.median(rounds.values()) if len(rounds) == len(BAD) else None,
        "prepare_s": round(prepare_s, 1),
        "converge_s": round(converge_s, 1),
        "controller_cpu_s": round(converge_cpu, 1),
        "controller_cpu_s_per_host_round": round(converge_cpu / size / len(BAD), 2),
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    results = [bench(size) for size in SIZES]
    small, large = results
    ratio = None
    if small["rollback_median_s"] and large["rollback_median_s"]:
        ratio = round(large["rollback_median_s"] / small["rollback_median_s"], 2)
    for result in results:
        print(f"{result['hosts']:>3} hosts: {json.dumps(result)}")
    print(
        f"rollback of {large['hosts']} hosts {large['rollback_median_s']} s against {small['hosts']} hosts "
        f"{small['rollback_median_s']} s: ratio {ratio} (goal <= {GOAL_RATIO}); the controller's CPU per host "
        f"and round {small['controller_cpu_s_per_host_round']} s ({small['hosts']} hosts), "
        f"{large['controller_cpu_s_per_host_round']} s ({large['hosts']} hosts)"
    )
    (OUT / "scaling.json").write_text(json.dumps({"results": results, "ratio": ratio}, indent=2) + "\n")
    ok = ratio is not None and ratio <= GOAL_RATIO
    print(f"bench_scaling: {'goal met' if ok else 'GOAL MISSED'} (details in {OUT / 'scaling.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
