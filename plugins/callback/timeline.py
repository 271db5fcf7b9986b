# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: timeline
type: aggregate
short_description: Record every task of a run per host, with its deploy phase, for the post-mortem
version_added: 0.2.0
author: queueops.rollback maintainers (@queueops)
description:
  - Records each task of a run for each host with its UTC start and end, its play and C(serial) batch,
    its outcome (V(ok), V(changed), V(failed), V(rescued), V(ignored), V(skipped), V(unreachable)) and, for
    the tasks of the M(queueops.rollback.rollout) role, its deploy phase (pause, drain, switch, restart,
    gate, rollback, replay, resume, verify) - the phases other tools do not know.
  - A C(serial) play runs once per batch; each batch is kept apart, so nothing is counted twice.
    A failed task that a C(rescue) section then handled is V(rescued), not V(failed).
  - With O(redis_url), the collection's own events of the run (C(queueops:events)) are added.
  - Writes a JSON file (O(path)) at the start of each play and batch, at the end, and when the run is
    stopped with SIGTERM (as AWX and ansible-runner cancel a job; the run is then V(interrupted)).
  - Publishes a summary as the custom stat C(queueops_timeline) (as C(ansible.builtin.set_stats)
    would), so ansible-runner hands it back in C(artifact_data); under ansible-runner the file goes to
    the job's artifact directory by default.
  - Records no task arguments, results or variables, only names, times and outcomes, and the first
    line of a failure's message unless the task is C(no_log) or O(record_messages=false). Under AWX it
    keeps who ran the job, from the variables AWX adds (C(awx_job_id), C(awx_user_name),
    C(awx_job_template_name)).
  - An aggregate callback, it runs beside the stdout callback (AWX's own display included); enable it
    with C(callbacks_enabled = queueops.rollback.timeline).
options:
  path:
    description:
      - The JSON file to write. Default C(timeline.json) in ansible-runner's artifact directory when the
        run is under ansible-runner or AWX, else C(~/.ansible/timeline/<UTC time>-<playbook>.json).
    type: path
    env:
      - name: QUEUEOPS_TIMELINE_PATH
    ini:
      - section: callback_queueops_timeline
        key: path
  redis_url:
    description:
      - Redis URL of the C(queueops:events) stream to read the run's events from at the end. Not recorded.
    type: str
    env:
      - name: QUEUEOPS_TIMELINE_REDIS_URL
    ini:
      - section: callback_queueops_timeline
        key: redis_url
  record_messages:
    description:
      - Keep the first line (at most 300 characters) of each failure's message.
    type: bool
    default: true
    env:
      - name: QUEUEOPS_TIMELINE_RECORD_MESSAGES
    ini:
      - section: callback_queueops_timeline
        key: record_messages
  record_extra_vars:
    description:
      - Keep the names (never the values) of the run's extra vars. Off by default.
    type: bool
    default: false
    env:
      - name: QUEUEOPS_TIMELINE_RECORD_EXTRA_VARS
    ini:
      - section: callback_queueops_timeline
        key: record_extra_vars
"""

import json
import os
import signal
import sys
import time
from datetime import datetime, timezone

from ansible.plugins.callback import CallbackBase

try:
    from ansible.playbook.block import Block
except ImportError:  # pragma: no cover - ansible-core always has it
    Block = None

#: Task files of the rollout role, and the phase their tasks belong to.
PHASES = {
    "pause.yml": "pause",
    "drain.yml": "drain",
    "switch.yml": "switch",
    "restart.yml": "restart",
    "wait.yml": "restart",
    "gate.yml": "gate",
    "recover.yml": "rollback",
    "back.yml": "rollback",
    "replay.yml": "replay",
    "resume.yml": "resume",
    "verify.yml": "verify",
}
ROLE_MARK = f"{os.sep}rollout{os.sep}tasks{os.sep}"
SUMMARY_STAT = "queueops_timeline"
AWX_IDENTITY = {"job_id": "awx_job_id", "user": "awx_user_name", "template": "awx_job_template_name"}
WRITE_EVERY = 1.0  # seconds: the file is rewritten at most this often between plays
OUTCOMES = ("ok", "changed", "failed", "rescued", "ignored", "skipped", "unreachable")


def utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def phase_of(task) -> str | None:
    """The rollout phase of a task: the nearest task file of the role (itself, then its includes)."""
    node = task
    while node is not None:
        path = (node.get_path() or "") if hasattr(node, "get_path") else ""
        if ROLE_MARK in path:
            name = os.path.basename(path.rsplit(":", 1)[0])
            if name in PHASES:
                return PHASES[name]
        node = getattr(node, "_parent", None)
    return None


def in_rescue(task) -> bool:
    """Whether a task runs in the ``rescue`` section of a block (directly or through an include)."""
    node, parent = task, getattr(task, "_parent", None)
    while parent is not None:
        if Block is not None and isinstance(parent, Block):
            uuid = getattr(node, "_uuid", None)
            if uuid is not None and any(getattr(t, "_uuid", None) == uuid for t in parent.rescue or []):
                return True
        node, parent = parent, getattr(parent, "_parent", None)
    return False


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "queueops.rollback.timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pid = os.getpid()
        self._stats = None
        self._path = None
        self._previous_sigterm = None
        self._play = None
        self._batches: dict[str, int] = {}
        self._task_started: dict[str, float] = {}
        self._host_started: dict[tuple[str, str], float] = {}
        self._open_failure: dict[str, dict] = {}
        self._written = 0.0
        self.record = {
            "version": 1,
            "playbook": None,
            "started": None,
            "ended": None,
            "status": "running",
            "plays": [],
            "tasks": [],
            "events": [],
        }

    # --- the run ---

    def v2_playbook_on_start(self, playbook):
        self._find_stats()
        now = time.time()
        name = os.path.basename(getattr(playbook, "_file_name", "") or "playbook")
        self.record.update(playbook=name, started=utc(now), started_epoch=now)
        self.record["awx"] = {"job_id": os.environ["JOB_ID"]} if os.environ.get("JOB_ID") else {}
        self._path = self._output_path(name, now)
        with_signal = signal.getsignal(signal.SIGTERM)
        if with_signal is not self._on_sigterm:
            self._previous_sigterm = with_signal
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def v2_playbook_on_play_start(self, play):
        self._find_stats()
        uuid = getattr(play, "_uuid", None) or play.get_name()
        self._batches[uuid] = self._batches.get(uuid, 0) + 1
        self._play = {"name": play.get_name().strip(), "batch": self._batches[uuid], "started": utc(time.time())}
        self.record["plays"].append(dict(self._play, hosts=[]))
        manager = play.get_variable_manager() if hasattr(play, "get_variable_manager") else None
        extra_vars = getattr(manager, "extra_vars", None) or {}
        # Who ran it, as AWX says in the variables it adds to every job: names and ids, never secrets.
        for key, var in AWX_IDENTITY.items():
            if var in extra_vars and key not in self.record["awx"]:
                self.record["awx"][key] = str(extra_vars[var])
        if self.get_option("record_extra_vars") and "extra_vars" not in self.record:
            self.record["extra_vars"] = sorted(extra_vars)
        self._write()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_started[task._uuid] = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self._task_started[task._uuid] = time.time()

    def v2_runner_on_start(self, host, task):
        self._host_started[(host.get_name(), task._uuid)] = time.time()

    def v2_runner_on_ok(self, result):
        self._add(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._add(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._add(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._add(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._stats = stats
        self._finish("failed" if any(stats.failures.values()) or any(stats.dark.values()) else "successful")
        self.record["stats"] = {
            host: stats.summarize(host) for host in sorted(set(stats.processed) | set(stats.custom) - {"_run"})
        }
        self._write()

    # --- recording ---

    def _add(self, result, outcome: str) -> None:
        task, host = result._task, result._host.get_name()
        now = time.time()
        if host in self._open_failure and in_rescue(task):
            self._open_failure.pop(host)["outcome"] = "rescued"
        start = self._host_started.pop((host, task._uuid), None) or self._task_started.get(task._uuid, now)
        entry = {
            "host": host,
            "task": task.get_name().strip(),
            "action": task.action,
            "phase": phase_of(task),
            "play": self._play["name"] if self._play else None,
            "batch": self._play["batch"] if self._play else None,
            "start": utc(start),
            "end": utc(now),
            "duration": round(now - start, 3),
            "outcome": outcome,
        }
        delegated = (result._result.get("_ansible_delegated_vars") or {}).get("ansible_host")
        if delegated:
            entry["delegated_to"] = delegated
        if outcome in ("failed", "ignored", "unreachable"):
            message = self._message(result)
            if message:
                entry["message"] = message
        if outcome == "failed":
            self._open_failure[host] = entry
        self.record["tasks"].append(entry)
        if self.record["plays"] and host not in self.record["plays"][-1]["hosts"]:
            self.record["plays"][-1]["hosts"] = sorted([*self.record["plays"][-1]["hosts"], host])
        self._publish()
        if now - self._written > WRITE_EVERY:
            self._write()

    def _message(self, result) -> str | None:
        if not self.get_option("record_messages") or result._result.get("censored") or result._task.no_log:
            return None
        text = str(result._result.get("msg") or "").strip()
        return text.splitlines()[0][:300] if text else None

    def summary(self) -> dict:
        hosts: dict[str, dict[str, int]] = {}
        phases: dict[str, dict[str, str]] = {}
        for entry in self.record["tasks"]:
            counts = hosts.setdefault(entry["host"], dict.fromkeys(OUTCOMES, 0))
            counts[entry["outcome"]] += 1
            if entry["phase"] and entry["outcome"] != "skipped":
                span = phases.setdefault(entry["phase"], {"start": entry["start"], "end": entry["end"]})
                span["start"], span["end"] = min(span["start"], entry["start"]), max(span["end"], entry["end"])
        return {
            "playbook": self.record["playbook"],
            "status": self.record["status"],
            "started": self.record["started"],
            "ended": self.record["ended"],
            "tasks": len(self.record["tasks"]),
            "hosts": hosts,
            "phases": phases,
            "path": self._path,
            "awx": self.record["awx"],
        }

    def _publish(self) -> None:
        # ansible-runner reads the custom stats when the stdout callback gets the final stats, which is
        # before any aggregate callback does: the summary has to be there already.
        if self._stats is not None:
            self._stats.set_custom_stats(SUMMARY_STAT, self.summary())

    def _find_stats(self) -> None:
        """The run's AggregateStats, from the TaskQueueManager that calls this callback."""
        if self._stats is not None:
            return
        frame = sys._getframe(1)
        for _depth in range(8):
            if frame is None:
                return
            owner = frame.f_locals.get("self")
            stats = getattr(owner, "_stats", None)
            if stats is not None and hasattr(stats, "set_custom_stats"):
                self._stats = stats
                return
            frame = frame.f_back

    def _finish(self, status: str) -> None:
        now = time.time()
        if self.record["status"] == "running":
            self.record["status"] = status
        self.record["ended"] = utc(now)
        self.record["events"] = self._events(self.record.get("started_epoch", now), now)
        self._publish()

    def _events(self, since: float, until: float) -> list[dict]:
        url = self.get_option("redis_url")
        if not url:
            return []
        try:
            import redis

            from ansible_collections.queueops.rollback.plugins.module_utils.drill import read_events

            return read_events(redis.Redis.from_url(url, socket_timeout=5), since, until)
        except Exception as exc:  # noqa: BLE001 - a post-mortem aid; the run's outcome is not at stake
            self._display.warning(f"queueops.rollback.timeline: the events could not be read: {exc}")
            return []

    def _on_sigterm(self, signum, frame):
        if os.getpid() == self._pid:
            self.record["status"] = "interrupted"
            self._finish("interrupted")
            self._write()
        previous = self._previous_sigterm
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    def _output_path(self, playbook: str, now: float) -> str:
        configured = self.get_option("path")
        if configured:
            return os.path.expanduser(configured)
        artifacts = os.environ.get("AWX_ISOLATED_DATA_DIR")  # ansible-runner's artifact dir of the job
        if artifacts:
            return os.path.join(artifacts, "timeline.json")
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return os.path.expanduser(os.path.join("~", ".ansible", "timeline", f"{stamp}-{playbook}.json"))

    def _write(self) -> None:
        if not self._path or os.getpid() != self._pid:
            return
        record = {key: value for key, value in self.record.items() if key != "started_epoch"}
        record["summary"] = self.summary()
        try:
            os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
            partial = f"{self._path}.partial"
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=1)
            os.replace(partial, self._path)
            self._written = time.time()
        except OSError as exc:
            self._display.warning(f"queueops.rollback.timeline: {self._path} could not be written: {exc}")
