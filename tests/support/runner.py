"""Run the collection's modules and playbooks through ansible-runner, the way AWX runs them."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from .paths import COLLECTIONS_PATH


@dataclass
class TaskResult:
    status: str  # ok | failed | unreachable | ...
    result: dict[str, Any]
    stdout: str = field(repr=False, default="")

    @property
    def failed(self) -> bool:
        return self.status != "ok" or bool(self.result.get("failed"))

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.result.get(key, default)


def runner_env(**extra: str) -> dict[str, str]:
    env = {
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_PATH),
        "ANSIBLE_PYTHON_INTERPRETER": os.environ.get("QUEUEOPS_TEST_PYTHON", _python()),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
    }
    env.update(extra)
    return env


def _python() -> str:
    import sys

    return sys.executable


def run_playbook(
    playbook: str | Path,
    *,
    private_data_dir: str | Path,
    extravars: dict[str, Any] | None = None,
    check: bool = False,
    diff: bool = False,
    inventory: str | None = None,
    envvars: dict[str, str] | None = None,
    timeout: int = 600,
) -> ansible_runner.Runner:
    """ansible-runner in ``private_data_dir`` (its artifacts, stdout included, stay there)."""
    cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    return ansible_runner.run(
        private_data_dir=str(private_data_dir),
        playbook=str(playbook),
        inventory=inventory or "localhost ansible_connection=local",
        extravars=extravars or {},
        envvars=runner_env(**(envvars or {})),
        cmdline=cmdline or None,
        quiet=True,
        timeout=timeout,
    )


def run_module(
    module: str, args: dict[str, Any], *, check: bool = False, diff: bool = False, envvars: dict[str, str] | None = None
) -> TaskResult:
    """One task with `module` and `args` on localhost; returns its registered result."""
    fqcn = module if "." in module else f"queueops.rollback.{module}"
    play = [
        {
            "name": "run one module",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [{"name": f"run {fqcn}", fqcn: args, "ignore_errors": True}],
        }
    ]
    with tempfile.TemporaryDirectory(prefix="queueops-runner-") as workdir:
        playbook = Path(workdir) / "play.yml"
        playbook.write_text(json.dumps(play))
        runner = run_playbook(playbook, private_data_dir=workdir, check=check, diff=diff, envvars=envvars)
        stdout = runner.stdout.read()
        for event in runner.events:
            if event.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
                data = event["event_data"]
                status = {"runner_on_ok": "ok", "runner_on_failed": "failed"}.get(event["event"], "unreachable")
                return TaskResult(status=status, result=data.get("res", {}), stdout=stdout)
    raise AssertionError(f"no task result from ansible-runner (status {runner.status}):\n{stdout}")
