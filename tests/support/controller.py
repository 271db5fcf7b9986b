"""A second controller for the fault scenarios: one ansible-playbook run of its own, in its own session.

    python -m tests.support.controller --playbook queueops.rollback.deploy --inventory <dir> \
        --extra-vars '{"pool": "shop", "version": "1.5.0"}' [--limit qo-faults-rq-w3] \
        [--kill-at 'Roll back, workers stopped first' --kill-after 1.5] --out run.json

It runs the playbook as another controller would (its own process, so its own run_owner and lease
owner), prints its output, and writes what happened as JSON (rc, whether it was killed, when, the
failure messages, the play recap and the hosts it found unreachable, the last lines). With
--kill-at, once a task whose name contains that text starts, it waits --kill-after seconds and
SIGKILLs the run's whole process group (ansible-playbook, its forks and their SSH clients), as a
controller that dies mid-run: nothing of it gets to clean up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

TASK_LINE = re.compile(r"^TASK \[(.*)\]")
RECAP_LINE = re.compile(r"^(\S+)\s+: ((?:\w+=\d+\s*)+)$")


def failures(lines: list[str]) -> list[str]:
    """The msg of every failed task the default callback printed (one JSON result per line)."""
    messages = []
    for line in lines:
        if line.startswith(("fatal: ", "failed: ")) and "=> " in line:
            try:
                messages.append(str(json.loads(line.split("=> ", 1)[1]).get("msg", "")))
            except ValueError:
                messages.append(line)
    return messages


def recap(lines: list[str]) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of the run: host -> {ok, changed, unreachable, failed, ...}."""
    hosts: dict[str, dict[str, int]] = {}
    starts = [i for i, text in enumerate(lines) if text.startswith("PLAY RECAP")]
    for line in lines[starts[-1] + 1 :] if starts else []:
        match = RECAP_LINE.match(line.strip())
        if match:
            counts = dict(field.split("=") for field in match.group(2).split())
            hosts[match.group(1)] = {name: int(value) for name, value in counts.items()}
    return hosts


def run(argv: list[str], kill_at: str | None, kill_after: float, env: dict[str, str]) -> dict:
    started = time.time()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the kill takes all of it
    )
    killed_at: list[float] = []
    lines: list[str] = []

    def kill() -> None:
        time.sleep(kill_after)
        if process.poll() is None:
            killed_at.append(time.time())
            os.killpg(process.pid, signal.SIGKILL)

    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line.rstrip("\n"))
        task = TASK_LINE.match(line)
        if kill_at and task and kill_at in task.group(1) and not killed_at:
            killed_at.append(0.0)  # armed once
            threading.Thread(target=kill, daemon=True).start()
    rc = process.wait()
    hosts = recap(lines)
    return {
        "rc": rc,
        "killed": bool(killed_at and killed_at[-1]),
        "killed_after_s": round(killed_at[-1] - started, 1) if killed_at and killed_at[-1] else None,
        "seconds": round(time.time() - started, 1),
        "failed_messages": failures(lines),
        "tasks": [m.group(1) for m in map(TASK_LINE.match, lines) if m],
        "unreachable": sorted(host for host, counts in hosts.items() if counts.get("unreachable")),
        "recap": hosts,
        "tail": lines[-40:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--playbook", required=True)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--extra-vars", default="{}")
    parser.add_argument("--limit")
    parser.add_argument("--kill-at", help="SIGKILL the run this long after a task whose name contains this starts")
    parser.add_argument("--kill-after", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    command = ["ansible-playbook", "-i", args.inventory, "-e", args.extra_vars, args.playbook]
    if args.limit:
        command += ["--limit", args.limit]
    # The default callback, one JSON result per line: its TASK [...] lines are what --kill-at reads.
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PYTHONUNBUFFERED="1",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json")  # fmt: skip
    outcome = run(command, args.kill_at, args.kill_after, env)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(outcome, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
