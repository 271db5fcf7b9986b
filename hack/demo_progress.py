"""`make demo`'s progress line while it runs, and its report at the end.

python hack/demo_progress.py --dir .cache/demo
python hack/demo_progress.py --dir .cache/demo --report
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path


def _last_sample(path: Path) -> dict:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "t" in entry:
            return entry
    return {}


def _phase(path: Path) -> str:
    try:
        tasks = json.loads(path.read_text())["tasks"]
    except (OSError, ValueError, KeyError):
        return ""
    for task in reversed(tasks):
        if task.get("phase") and task.get("outcome") != "skipped":
            return f"{task['phase']} ({task['task'][:48]})"
    return ""


def progress(directory: Path, began: float) -> None:
    """One line, rewritten every second on a terminal; a line every 15 s into a log."""
    tty = sys.stdout.isatty()
    while True:
        sample = _last_sample(directory / "samples.jsonl")
        parts = [f"[{time.monotonic() - began:5.0f} s]"]
        phase = _phase(directory / "timeline.json")
        if phase:
            parts.append(f"phase {phase}")
        if sample:
            depth = sum(sample.get("depth", {}).values())
            parts.append(f"tasks finished {sample.get('finished')}, failed {sample.get('failed')}, queued {depth}")
        if tty:
            print("\r\033[K  " + " · ".join(parts), end="", flush=True)
        else:
            print("  " + " · ".join(parts), flush=True)
        time.sleep(1 if tty else 15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    if args.report:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".cache" / "collections"))
        from ansible_collections.queueops.rollback.plugins.module_utils.drill import text_report

        print(text_report(json.loads((args.dir / "report.json").read_text())))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        progress(args.dir, time.monotonic())
    return 0


if __name__ == "__main__":
    sys.exit(main())
