"""Run one of the collection's playbooks as an AWX job template would, through ansible_runner.run().

AWX lays out a private data directory per job and hands it to ansible-runner: the survey answers and
the variables it injects (awx_job_id, awx_user_name, awx_job_template_name, and their tower_* twins)
in env/extravars, its job environment in env/envvars, the inventory under inventory/, and the project
checkout under project/. This does the same with the job template definition of awx/job_templates/,
its survey answers on the command line, and the Molecule fleet's inventory; it prints what AWX would
show of the job as JSON (status, rc, the stats of the playbook_on_stats event, its artifact_data, the
timeline artifact) and writes it to --out.

    python -m tests.support.awx_job --template drill --inventory <dir> --answer pool=shop ... --out job.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import ansible_runner
import yaml

from . import awx_survey
from .paths import COLLECTIONS_PATH, REPO

AWX_USER = "alice"
AWX_USER_ID = 7


def template(name: str) -> dict:
    return yaml.safe_load((REPO / "awx" / "job_templates" / f"{name}.yml").read_text())


def injected(job_id: int, template_name: str, template_id: int) -> dict:
    """The variables AWX adds to every job's extra vars (awx/main/models/jobs.py, _get_awx_vars)."""
    values = {
        "job_id": job_id,
        "job_launch_type": "manual",
        "user_name": AWX_USER,
        "user_email": f"{AWX_USER}@example.invalid",
        "user_first_name": "Alice",
        "user_last_name": "Operator",
        "user_id": AWX_USER_ID,
        "job_template_id": template_id,
        "job_template_name": template_name,
        "project_revision": "0" * 40,
        "inventory_id": 1,
        "inventory_name": "sandbox",
        "execution_node": "localhost",
    }
    return {f"{prefix}_{key}": value for prefix in ("awx", "tower") for key, value in values.items()}


def run_job(
    name: str,
    answers: dict,
    inventory: str,
    job_id: int,
    out: Path | None = None,
    extra_vars: dict | None = None,
    timeout: int = 900,
) -> dict:
    """``answers`` to the template's survey (checked as AWX checks them: a job it would refuse does not
    run); ``extra_vars`` those the template itself sets (AWX's extra_vars field)."""
    definition = template(name)
    survey = json.loads((REPO / "awx" / "surveys" / f"{name}.json").read_text())
    refused = awx_survey.answer_errors(survey, answers)
    if refused:
        raise SystemExit(f"AWX would not launch {name}: {refused}")
    answers = {item["variable"]: answers.get(item["variable"], item.get("default")) for item in survey["spec"]}
    private = Path(tempfile.mkdtemp(prefix=f"queueops-awx-{name}-"))
    try:
        (private / "env").mkdir()
        extravars = {**(extra_vars or {}), **answers, **injected(job_id, definition["name"], 100 + job_id)}
        (private / "env" / "extravars").write_text(json.dumps(extravars))
        envvars = {
            "JOB_ID": str(job_id),
            "AWX_HOST": "https://awx.example.invalid",
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
            "ANSIBLE_CALLBACKS_ENABLED": "queueops.rollback.timeline",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
        }
        (private / "env" / "envvars").write_text(json.dumps(envvars))
        (private / "project").symlink_to(REPO)
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=definition["playbook"],
            inventory=inventory,
            quiet=True,
            timeout=timeout,
        )
        stats = next((e["event_data"] for e in runner.events if e.get("event") == "playbook_on_stats"), {})
        timeline_path = Path(runner.config.artifact_dir) / "timeline.json"
        job = {
            "template": definition["name"],
            "playbook": definition["playbook"],
            "status": runner.status,
            "rc": runner.rc,
            "stats": {key: stats.get(key, {}) for key in ("ok", "changed", "failures", "rescued", "dark", "skipped")},
            "artifact_data": stats.get("artifact_data", {}),
            "timeline": json.loads(timeline_path.read_text()) if timeline_path.exists() else None,
            "failed_messages": [
                e["event_data"].get("res", {}).get("msg")
                for e in runner.events
                if e.get("event") == "runner_on_failed" and not e["event_data"].get("ignore_errors")
            ],
            "stdout_tail": runner.stdout.read()[-4000:],
        }
    finally:
        shutil.rmtree(private, ignore_errors=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(job, indent=1))
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", required=True, help="awx/job_templates/<name>.yml")
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--answer", action="append", default=[], help="a survey answer, name=value (YAML value)")
    parser.add_argument("--extra-var", action="append", default=[], help="set by the template, name=value (YAML)")
    parser.add_argument("--answers", type=json.loads, default={}, help="survey answers as a JSON object")
    parser.add_argument("--extra-vars", type=json.loads, default={}, help="the template's extra vars, JSON")
    parser.add_argument("--job-id", type=int, default=4242)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    survey = json.loads((REPO / "awx" / "surveys" / f"{args.template}.json").read_text())
    types = {item["variable"]: item["type"] for item in survey["spec"]}
    cast = {"integer": int, "float": float}
    answers, extra = dict(args.answers), dict(args.extra_vars)
    for item in args.answer:  # typed as the survey types them, as AWX's form does
        key, _, value = item.partition("=")
        answers[key] = cast.get(types.get(key, "text"), str)(value)
    for item in args.extra_var:
        key, _, value = item.partition("=")
        extra[key] = yaml.safe_load(value) if value else ""
    job = run_job(args.template, answers, args.inventory, args.job_id, args.out, extra_vars=extra)
    print(json.dumps({k: v for k, v in job.items() if k not in ("timeline", "stdout_tail")}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ANSIBLE_NOCOLOR", "1")
    sys.exit(main())
