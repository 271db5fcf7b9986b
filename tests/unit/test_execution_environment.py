"""The execution environment AWX runs the job templates in: `ansible-builder create` makes its
context from execution-environment.yml, with the collection and its pinned dependencies."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_pin_of_the_ee_is_the_one_the_tests_run_with():
    dev = _pins(REPO / "requirements-dev.txt")
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    for key, package in (("ansible_core", "ansible-core"), ("ansible_runner", "ansible-runner")):
        name, version = ee["dependencies"][key]["package_pip"].split("==")
        assert (name, version) == (package, dev[package])
    ee_pins = {name.lower(): version for name, version in (line.split("==") for line in ee["dependencies"]["python"])}
    assert set(ee_pins) >= {"redis", "rq", "celery", "kombu"}
    assert all(dev[name] == version for name, version in ee_pins.items())
    meta = yaml.safe_load((REPO / "meta" / "execution-environment.yml").read_text())
    floors = (REPO / meta["dependencies"]["python"]).read_text()
    for name in ("redis", "rq", "celery"):
        assert re.search(rf"^{name}(\[\w+\])?>=", floors, re.M), f"the collection needs {name}"
    assert (REPO / meta["dependencies"]["system"]).is_file()


def test_ansible_builder_create_makes_a_context_with_the_collection(tmp_path):
    context = tmp_path / "context"
    done = subprocess.run(
        [str(REPO / "hack" / "ee-context.sh"), str(context)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    containerfile = (context / "Containerfile").read_text()
    dev = _pins(REPO / "requirements-dev.txt")
    refs = f"ansible-core=={dev['ansible-core']} ansible-runner=={dev['ansible-runner']}"
    assert f'ANSIBLE_INSTALL_REFS="{refs}"' in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "rq==" + dev["rq"] in (context / "_build" / "requirements.txt").read_text().split()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements["collections"] == [{"name": "collections/queueops-rollback.tar.gz", "type": "file"}]
    with tarfile.open(context / "_build" / "collections" / "queueops-rollback.tar.gz") as tarball:
        names = set(tarball.getnames())
    assert {"meta/execution-environment.yml", "meta/ee-requirements.txt", "plugins/modules/worker_rollback.py"} <= names
