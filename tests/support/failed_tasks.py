"""The tasks that failed a play, from an ansible-playbook or Molecule log, for a summary that says why.

    python -m tests.support.failed_tasks .cache/test-logs/faults.log

For every PLAY RECAP with a host that failed or was unreachable, prints that host's last failure that
was not ignored (a host's earlier failures were rescued, or it would have stopped there): the task,
the host and the first line of the message. Prints nothing when every play ended well.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK = re.compile(r"^TASK \[(?P<task>.*)\] \*+$")
FATAL = re.compile(r"^(?P<kind>fatal|failed): \[(?P<host>[^\]]+?)(?: -> [^\]]+)?\]")
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)
MESSAGE = re.compile(r"^\s+msg: (?P<msg>.*)$")


def failures(lines: list[str]) -> list[str]:
    found: list[str] = []
    task, last, pending = "", {}, None
    in_recap = False
    for number, raw in enumerate(lines, 1):
        line = ANSI.sub("", raw.rstrip("\n"))
        if match := TASK.match(line):
            task, pending, in_recap = match["task"], None, False
        elif match := FATAL.match(line):
            pending = {"host": match["host"], "task": task, "line": number, "msg": ""}
            last[match["host"]] = pending
        elif pending and not pending["msg"] and (match := MESSAGE.match(line)):
            pending["msg"] = match["msg"].strip("'\"")[:200]
        elif line.startswith("...ignoring") and pending:
            last.pop(pending["host"], None)
            pending = None
        elif line.startswith("PLAY RECAP"):
            in_recap, pending = True, None
        elif in_recap and (match := RECAP.match(line)):
            if int(match["failed"]) or int(match["unreachable"]):
                entry = last.get(match["host"])
                where = f"{entry['task']} (log line {entry['line']}): {entry['msg']}" if entry else "no failure found"
                found.append(f"{match['host']}: failed={match['failed']} unreachable={match['unreachable']}: {where}")
        elif in_recap and not line.strip():
            continue
        elif in_recap:
            in_recap, last = False, {}
    return found


def main(argv: list[str]) -> int:
    for path in argv:
        for failure in failures(Path(path).read_text(errors="replace").splitlines()):
            print(failure)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
