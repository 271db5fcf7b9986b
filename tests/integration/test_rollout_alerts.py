"""The rollout role's alerts (tasks/alert.yml) posted to real HTTP receivers on 127.0.0.1: a generic JSON
body and a Slack-compatible one, and a receiver that fails or is not there warns without failing the play."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.support.alert_receiver import serve
from tests.support.runner import run_playbook

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Alert
      ansible.builtin.include_role:
        name: queueops.rollback.rollout
        tasks_from: alert.yml
      vars:
        rollout_pool: shop
        rollout_version: 1.2.0
        rollout_backend: rq
        rollout_queues: [orders]
        rollout_now: {current: 1.1.0}
        rollout_failure: "Health gate of release 1.2.0: 12 of 40 tasks failed (30.0%)"
        rollout_gate: {verdict: unhealthy, reason: "12 of 40 tasks failed (30.0%)", numbers: {failures: 12, tasks: 40}}
        rollout_replayed: {replayed: 12}
        rollout_alerts_report_url: https://reports.example/drill/7
"""


@pytest.fixture
def receivers(tmp_path):
    started = []

    def start(status: int = 200) -> tuple[str, Path]:
        out = tmp_path / f"posts-{len(started)}.jsonl"
        server = serve(out, status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/hook", out

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def posts(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def run(tmp_path, alerts, event="rolled_back", **extra):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "run").mkdir()
    runner = run_playbook(
        tmp_path / "play.yml",
        private_data_dir=tmp_path / "run",
        extravars={"rollout_alerts": alerts, "rollout_alert_event": event, **extra},
    )
    return runner, runner.stdout.read()


def test_json_and_slack_bodies_say_what_happened(tmp_path, receivers):
    json_url, json_out = receivers()
    slack_url, slack_out = receivers()
    runner, stdout = run(
        tmp_path, [{"url": json_url, "headers": {"X-Token": "t0k"}}, {"url": slack_url, "format": "slack"}]
    )
    assert runner.status == "successful", stdout
    [generic] = posts(json_out)
    assert generic["path"] == "/hook" and generic["headers"]["X-Token"] == "t0k"
    body = generic["body"]
    summary = (
        "rolled back pool shop from 1.2.0 to 1.1.0 because Health gate of release 1.2.0: 12 of 40 tasks failed "
        "(30.0%); replayed 12 task(s) the bad release failed"
    )
    assert {k: body[k] for k in ("event", "summary", "pool", "backend", "from_release", "to_release", "replayed")} == {
        "event": "rolled_back",
        "summary": summary,
        "pool": "shop",
        "backend": "rq",
        "from_release": "1.2.0",
        "to_release": "1.1.0",
        "replayed": 12,
    }
    assert body["verdict"] == {"status": "unhealthy", "reason": "12 of 40 tasks failed (30.0%)",
                               "numbers": {"failures": 12, "tasks": 40}}  # fmt: skip
    assert body["report_url"] == "https://reports.example/drill/7" and body["hosts"] == ["localhost"]
    [slack] = posts(slack_out)
    assert slack["body"]["text"] == f"queueops: {summary}"
    attachment = slack["body"]["attachments"][0]
    assert attachment["color"] == "danger" and attachment["title_link"] == "https://reports.example/drill/7"
    assert {f["title"]: f["value"] for f in attachment["fields"]} == {
        "From": "1.2.0", "To": "1.1.0", "Verdict": "12 of 40 tasks failed (30.0%)", "Replayed": "12 task(s)"
    }  # fmt: skip
    assert json_url not in stdout and slack_url not in stdout, "a webhook URL is a secret: never in the output"


def test_gates_closed_names_the_gates_and_keeps_the_release(tmp_path, receivers):
    url, out = receivers()
    gate = {
        "verdict": "unhealthy",
        "reason": "9 of 50 tasks failed (18.0%)",
        "numbers": {},
        "gates_closed": ["new_totals"],
    }
    runner, stdout = run(
        tmp_path, [{"url": url}], event="gates_closed", rollout_gate=gate, rollout_now={"current": "1.2.0"}
    )
    assert runner.status == "successful", stdout
    [post] = posts(out)
    assert post["body"]["event"] == "gates_closed" and post["body"]["gates_closed"] == ["new_totals"]
    assert post["body"]["to_release"] == "1.2.0" == post["body"]["from_release"]
    assert post["body"]["summary"].startswith("closed the feature gates new_totals of release 1.2.0 of pool shop")


def test_a_failed_notification_warns_and_the_others_are_still_sent(tmp_path, receivers):
    failing_url, failing_out = receivers(status=500)
    good_url, good_out = receivers()
    dead_url = f"http://127.0.0.1:{free_port()}/hook"
    runner, stdout = run(tmp_path, [{"url": failing_url}, {"url": dead_url, "timeout": 2}, {"url": good_url}])
    assert runner.status == "successful", stdout
    assert len(posts(failing_out)) == 1 and len(posts(good_out)) == 1
    warnings = [
        line for line in stdout.splitlines() if "[WARNING] the alert rolled_back of pool shop was not sent" in line
    ]
    assert len(warnings) == 2, stdout
    assert any("HTTP Error 500" in line or "500" in line for line in warnings)
    assert any("Connection refused" in line for line in warnings)
