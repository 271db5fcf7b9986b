"""Real `rq worker` and `celery worker` processes from a given virtualenv, stopped cleanly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import DEV_VENV, SAMPLE_APP


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen
    workdir: Path  # its log and its TMPDIR; removed once the worker has exited

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """Warm shutdown (SIGTERM: finish the current task, take no new one); SIGKILL after timeout."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._clean_up()
        return self.process.returncode

    def kill(self) -> None:
        """Die mid-task the way an OOM kill does: every process of the worker, no clean-up.

        Killing the process group is not enough: RQ moves its forked work horse into a session of
        its own, and a surviving horse would finish the "killed" job.
        """
        if self.alive():
            for pid in [*_descendants(self.process.pid), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()
        self._clean_up()

    def _clean_up(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid``, read from /proc."""
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent_of[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parent_of.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def _env(
    redis_url: str,
    release: str | None,
    fail_every: int | None,
    app_path: Path | None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    if app_path is None:  # the app is installed in the venv (a release wheel): nothing may shadow it
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(app_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["SAMPLEAPP_REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    if release is not None:
        env["SAMPLEAPP_RELEASE"] = release
    if fail_every is not None:
        env["SAMPLEAPP_FAIL_EVERY"] = str(fail_every)
    env.update(extra_env or {})
    return env


def _spawn(name: str, args: list[str], env: dict[str, str]) -> WorkerProcess:
    workdir = Path(tempfile.mkdtemp(prefix="queueops-worker-"))
    env = {**env, "TMPDIR": str(workdir)}  # what a killed worker leaves behind goes with the directory
    with open(workdir / "worker.log", "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return WorkerProcess(name=name, process=process, workdir=workdir)


def _wait_for(worker: WorkerProcess, ready, what: str, timeout: float = 30.0) -> WorkerProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"{what} {worker.name} exited early:\n{worker.log()}")
        if ready():
            return worker
        time.sleep(0.05)
    worker.kill()
    raise RuntimeError(f"{what} {worker.name} not ready within {timeout} s:\n{worker.log()}")


def start_rq_worker(
    redis_url: str,
    queues: list[str],
    name: str,
    *,
    venv: Path = DEV_VENV,
    release: str | None = None,
    fail_every: int | None = None,
    app_path: Path | None = SAMPLE_APP,
    extra_args: list[str] | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """`rq worker --name NAME QUEUES...`; ready once it has registered itself in Redis.

    ``command`` replaces ``<venv>/bin/rq worker`` (a release's ``sampleapp-rq-worker``, say);
    ``app_path=None`` runs the app installed in the venv; ``env`` adds to the worker's environment.
    """
    import redis

    args = [
        *(command or [str(venv / "bin" / "rq"), "worker"]),
        "--url",
        redis_url,
        "--name",
        name,
        "--logging_level",
        "INFO",
        *(extra_args or []),
        *queues,
    ]
    worker = _spawn(name, args, _env(redis_url, release, fail_every, app_path, env))
    client = redis.Redis.from_url(redis_url)
    try:
        return _wait_for(worker, lambda: client.sismember("rq:workers", f"rq:worker:{name}"), "rq worker")
    finally:
        client.close()


def start_celery_worker(
    redis_url: str,
    queues: list[str],
    name: str,
    *,
    venv: Path = DEV_VENV,
    release: str | None = None,
    fail_every: int | None = None,
    concurrency: int = 2,
    app_path: Path | None = SAMPLE_APP,
    events: bool = True,
    extra_args: list[str] | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> WorkerProcess:
    """`celery -A sampleapp.celery_app worker -n NAME@host -Q QUEUES`; ready once it logs "ready".

    ``command`` replaces ``<venv>/bin/celery -A sampleapp.celery_app worker`` (a release's
    ``sampleapp-celery-worker``, say); ``app_path`` and ``env`` as for :func:`start_rq_worker`.
    """
    nodename = name if "@" in name else f"{name}@{socket.gethostname()}"
    args = [
        *(command or [str(venv / "bin" / "celery"), "-A", "sampleapp.celery_app", "worker"]),
        "-n",
        nodename,
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-P",
        "prefork",
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
        *(["-E"] if events else []),
        *(extra_args or []),
    ]
    worker = _spawn(nodename, args, _env(redis_url, release, fail_every, app_path, env))
    return _wait_for(worker, lambda: f"{nodename} ready." in worker.log(), "celery worker")
