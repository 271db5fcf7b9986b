"""The timeline callback on real runs: per host, per serial batch, rescued apart from failed, a summary in
ansible-runner's artifact_data, an interrupted run still recorded, and nothing secret in the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support.paths import COLLECTIONS_PATH
from tests.support.runner import run_playbook

PLAY = [
    {
        "name": "Canary in two batches",
        "hosts": "all",
        "gather_facts": False,
        "serial": [1, 2],
        "tasks": [
            {
                "name": "Deploy, or roll back by itself",
                "block": [
                    {"name": "Switch", "ansible.builtin.command": "true"},
                    {
                        "name": "Health gate",
                        "ansible.builtin.fail": {"msg": "gate failed on {{ inventory_hostname }}\nsecond line"},
                        "when": "inventory_hostname == 'b'",
                    },
                ],
                "rescue": [{"name": "Roll back", "ansible.builtin.include_tasks": "rollback.yml"}],
                "always": [{"name": "Leave nothing paused", "ansible.builtin.debug": {"msg": "resumed"}}],
            },
            {
                "name": "Probe",
                "ansible.builtin.command": "false",
                "ignore_errors": True,
                "changed_when": False,
            },
            {
                "name": "Secret step",
                "ansible.builtin.fail": {"msg": "{{ password }}"},
                "no_log": True,
                "ignore_errors": True,
            },
            {"name": "Never", "ansible.builtin.debug": {"msg": "x"}, "when": False},
        ],
    }
]
INVENTORY = "a ansible_connection=local\nb ansible_connection=local\nc ansible_connection=local\n"


def _write_play(directory: Path, play=PLAY) -> Path:
    rollback = [{"name": "Switch back", "ansible.builtin.command": "true"}]
    (directory / "rollback.yml").write_text(yaml.safe_dump(rollback))
    playbook = directory / "play.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    return playbook


def _timeline_env(path: Path) -> dict[str, str]:
    return {
        "ANSIBLE_CALLBACKS_ENABLED": "queueops.rollback.timeline",
        "QUEUEOPS_TIMELINE_PATH": str(path),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }


def test_records_each_host_per_batch_and_tells_rescued_from_failed(tmp_path):
    _write_play(tmp_path)
    (tmp_path / "hosts").write_text(INVENTORY)
    timeline = tmp_path / "timeline.json"
    done = subprocess.run(
        [Path(sys.executable).parent / "ansible-playbook", "-i", "hosts", "play.yml", "-e", "password=hunter2"],
        cwd=tmp_path,
        env={**os.environ, **_timeline_env(timeline)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(timeline.read_text())
    assert record["status"] == "successful"
    assert [(p["batch"], p["hosts"]) for p in record["plays"]] == [(1, ["a"]), (2, ["b", "c"])]
    outcome = {(t["host"], t["task"]): t["outcome"] for t in record["tasks"]}
    assert outcome[("b", "Health gate")] == "rescued"  # junit would say failed
    assert outcome[("a", "Health gate")] == outcome[("c", "Health gate")] == "skipped"
    assert outcome[("b", "Switch back")] == "changed"
    assert ("a", "Switch back") not in outcome
    assert outcome[("c", "Probe")] == "ignored"
    assert {t["batch"] for t in record["tasks"] if t["host"] == "a"} == {1}
    assert {t["batch"] for t in record["tasks"] if t["host"] in "bc"} == {2}
    gate = next(t for t in record["tasks"] if (t["host"], t["task"]) == ("b", "Health gate"))
    assert gate["message"] == "gate failed on b"  # first line only
    assert gate["start"] <= gate["end"] and gate["start"].endswith("Z")
    assert "hunter2" not in timeline.read_text()  # no_log task, and extra vars are not recorded
    assert "password" not in timeline.read_text()
    summary = record["summary"]
    assert summary["hosts"]["b"]["rescued"] == 1 and summary["hosts"]["b"]["failed"] == 0
    assert summary["tasks"] == len(record["tasks"])
    # Ansible's own count agrees (its ok includes changed).
    assert record["stats"]["b"]["rescued"] == 1 and record["stats"]["b"]["failures"] == 0


def test_ansible_runner_gets_the_summary_in_artifact_data_and_the_file_in_its_artifacts(tmp_path):
    playbook = _write_play(tmp_path)
    env = _timeline_env(tmp_path / "unused.json")
    del env["QUEUEOPS_TIMELINE_PATH"]  # under ansible-runner it goes to the job's artifact directory
    extravars = {"password": "hunter2", "awx_job_id": 77, "awx_user_name": "alice", "awx_job_template_name": "drill"}
    runner = run_playbook(playbook, private_data_dir=tmp_path, inventory=INVENTORY, envvars=env, extravars=extravars)
    assert runner.status == "successful", runner.stdout.read()
    stats = next(e for e in runner.events if e["event"] == "playbook_on_stats")["event_data"]
    summary = stats["artifact_data"]["queueops_timeline"]
    assert summary["hosts"]["b"]["rescued"] == 1
    assert summary["tasks"] >= 14
    assert stats["rescued"] == {"b": 1}
    artifact = Path(runner.config.artifact_dir) / "timeline.json"
    record = json.loads(artifact.read_text())
    assert record["summary"]["hosts"] == summary["hosts"]
    assert record["awx"] == summary["awx"] == {"job_id": "77", "user": "alice", "template": "drill"}
    assert "hunter2" not in artifact.read_text()


def test_a_run_stopped_with_sigterm_is_recorded_as_interrupted(tmp_path):
    play = [{"name": "Long", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Quick", "ansible.builtin.command": "true"},
        {"name": "Slow", "ansible.builtin.command": "sleep 60"},
    ]}]  # fmt: skip
    _write_play(tmp_path, play)
    timeline = tmp_path / "timeline.json"
    process = subprocess.Popen(
        [Path(sys.executable).parent / "ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml"],
        cwd=tmp_path,
        env={**os.environ, **_timeline_env(timeline)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not timeline.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # into the slow task
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    record = json.loads(timeline.read_text())
    assert record["status"] == "interrupted"
    assert record["ended"]
    assert [t["task"] for t in record["tasks"]] == ["Quick"]


def test_the_collections_events_of_the_run_are_added_and_the_redis_url_is_not_recorded(
    tmp_path, redis_server, redis_client
):
    from ansible_collections.queueops.rollback.plugins.module_utils.events import record_event

    client = redis_client  # emptied first: a test before it may have left a queueops:events that is no stream
    record_event(client, "rollout_check", "healthy", release="0.9.0")  # before the run: not its event
    play = [{"name": "Gate", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Verdict", "ansible.builtin.command": f"{sys.executable} -c \"import redis; from ansible_collections"
         f".queueops.rollback.plugins.module_utils.events import record_event; assert record_event("
         f"redis.Redis.from_url('{redis_server.url}'), 'rollout_check', 'unhealthy', release='1.2.0'), 'unrecorded'\""},
    ]}]  # fmt: skip
    time.sleep(0.01)
    _write_play(tmp_path, play)
    timeline = tmp_path / "timeline.json"
    env = {**os.environ, **_timeline_env(timeline), "QUEUEOPS_TIMELINE_REDIS_URL": redis_server.url,
           "PYTHONPATH": str(COLLECTIONS_PATH)}  # fmt: skip
    done = subprocess.run(
        [Path(sys.executable).parent / "ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(timeline.read_text())
    assert "events could not be read" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert [(e["module"], e["action"], e["release"]) for e in record["events"]] == [
        ("rollout_check", "unhealthy", "1.2.0")
    ]
    assert redis_server.url not in timeline.read_text()
