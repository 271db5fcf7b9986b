"""The sample app's four releases, as the roles install them: wheels from the fleet wheelhouse, a
virtualenv per release built with no index (Pool.stage), and the release's own console scripts
run as real RQ and Celery workers against a real redis-server.

1.0.0 and 1.1.0 finish every task (1.1.0 only once SAMPLEAPP_GREETING is set), 1.2.0 fails exactly
the tokens with crc32(token) % 3 == 0 (and a good release replays them), 1.3.0 exits at start, and
1.8.0 fails those tokens only on its new path, which the pool's feature gate opens for a share of keys,
and 1.9.1 sends and runs the task type totals on its own queue, which an older release cannot run.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ansible_collections.queueops.rollback.plugins.module_utils import gates
from ansible_collections.queueops.rollback.plugins.module_utils.releases import Pool, Source
from tests.support import sample_wheels
from tests.support.fleet_wheelhouse import fleet_wheelhouse, release_requirements
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, start_celery_worker, start_rq_worker

POOL = "orders"
QUEUE = "default"
GREETING = "hello from 1.1.0"
BACKENDS = ["rq", "celery"]
TESTED = (
    "1.0.0",
    "1.1.0",
    "1.2.0",
    "1.3.0",
    "1.8.0",
    "1.9.1",
)  # the fleets' other releases repeat these under new numbers


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    return fleet_wheelhouse()


@pytest.fixture(scope="module")
def releases(wheelhouse, tmp_path_factory) -> dict[str, Path]:
    """version -> its release directory (with venv/), staged the way the worker_release role stages it."""
    root = str(tmp_path_factory.mktemp("fleet-host"))

    def stage(version: str) -> Path:
        pool = Pool(root, POOL)
        source = Source(wheelhouse=str(wheelhouse), requirements=release_requirements(version), python=sys.executable)
        assert pool.stage(version, source)
        return Path(pool.release_path(version))

    with ThreadPoolExecutor(max_workers=2) as builders:  # each venv costs ~10 s, mostly ensurepip and pip
        return dict(zip(TESTED, builders.map(stage, TESTED)))


def program(release: Path, backend: str) -> list[str]:
    return [str(release / "venv" / "bin" / f"sampleapp-{backend}-worker")]


def worker_name(version: str, index: int = 1) -> str:
    return f"{POOL}:{version}:{index}"


def start(
    backend: str,
    redis_url: str,
    release: Path,
    version: str,
    env: dict[str, str] | None = None,
    queues: list[str] | None = None,
):
    """The release's own entry point as its systemd unit runs it; the app comes from the venv only."""
    common = {"venv": release / "venv", "app_path": None, "command": program(release, backend), "env": env}
    if backend == "rq":
        return start_rq_worker(redis_url, queues or [QUEUE], worker_name(version), **common)
    return start_celery_worker(redis_url, queues or [QUEUE], worker_name(version), **common)


def expected_worker(backend: str, version: str) -> str:
    return worker_name(version) if backend == "rq" else f"{worker_name(version)}@{socket.gethostname()}"


def enqueue(
    backend: str, redis_server, redis_client, tokens: list[str], queue: str = QUEUE, task: str = "work"
) -> None:
    if backend == "rq":
        from rq import Queue

        rq_queue = Queue(queue, connection=redis_client)
        for token in tokens:
            rq_queue.enqueue(f"sampleapp.tasks.{task}", token)
    else:
        from celery import Celery

        app = Celery(broker=redis_server.url)
        for token in tokens:
            app.send_task(f"sampleapp.{task}", args=[token], queue=queue)
        app.close()


def run_tasks(backend, redis_server, redis_client, ledger, tokens: list[str]) -> None:
    ledger.note_enqueued(*tokens)
    enqueue(backend, redis_server, redis_client, tokens)
    settled = wait_until(lambda: set(ledger.done_counts()) | set(ledger.failed_counts()) >= set(tokens), timeout=30)
    assert settled, f"unsettled: {set(tokens) - set(ledger.done_counts()) - set(ledger.failed_counts())}"


def stop(worker: WorkerProcess) -> None:
    code = worker.stop(timeout=20)
    assert code == 0, f"{worker.name} exited {code}:\n{worker.log()}"


def start_to_exit(backend: str, redis_url: str, release: Path, version: str, env: dict[str, str] | None = None):
    """Run the entry point as a unit would when the release cannot start: it must exit, not hang."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SAMPLEAPP_")}
    environment.update({"SAMPLEAPP_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(env or {})})
    if backend == "rq":
        args = ["--url", redis_url, "--name", worker_name(version), QUEUE]
    else:
        args = ["-n", expected_worker(backend, version), "-Q", QUEUE, "-c", "1", "--without-mingle", "--without-gossip"]
    return subprocess.run(
        [*program(release, backend), *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


BAD_RELEASES = {"1.2.0", "1.2.1", "1.7.0", "1.9.0"}  # fail a share of their tasks (sample_wheels.py)


def tokens_for(backend: str, version: str, n: int = 9) -> list[str]:
    return [f"{backend}-{version}-{i}" for i in range(n)]


# -- the wheels and the wheelhouse --------------------------------------------------------------


def test_each_wheel_is_complete_and_says_which_release_it_is(wheelhouse):
    for version, release in sample_wheels.RELEASES.items():
        with zipfile.ZipFile(wheelhouse / release.wheel_name) as wheel:
            dist_info = f"sampleapp-{version}.dist-info"
            record = wheel.read(f"{dist_info}/RECORD").decode().splitlines()
            assert record[-1] == f"{dist_info}/RECORD,,"
            assert sorted(line.split(",")[0] for line in record) == sorted(wheel.namelist())
            for line in record[:-1]:
                path, digest, size = line.split(",")
                data = wheel.read(path)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert (digest, int(size)) == (f"sha256={expected}", len(data)), path
            assert f"Version: {version}\n" in wheel.read(f"{dist_info}/METADATA").decode()
            entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
            assert "sampleapp-rq-worker = sampleapp.entry:rq_worker" in entry_points
            assert "sampleapp-celery-worker = sampleapp.entry:celery_worker" in entry_points
            release_py = wheel.read("sampleapp/release.py").decode()
            assert f"VERSION = {version!r}" in release_py
            assert f"FAIL_EVERY = {release.fail_every}" in release_py
            assert release.fail_every == (3 if version in BAD_RELEASES else 0)
            assert f"TASKS: tuple[str, ...] = {release.tasks!r}" in release_py


def test_wheels_are_reproducible_and_the_wheelhouse_is_reused(wheelhouse, tmp_path):
    for release in sample_wheels.RELEASES.values():
        again = sample_wheels.build_wheel(release, tmp_path)
        assert again.read_bytes() == (wheelhouse / release.wheel_name).read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in wheelhouse.iterdir()}
    assert fleet_wheelhouse() == wheelhouse
    assert {p.name: p.stat().st_mtime_ns for p in wheelhouse.iterdir()} == before


# -- the releases, run by each backend ----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_1_0_0_finishes_every_task(backend, releases, redis_server, redis_client, ledger):
    worker = start(backend, redis_server.url, releases["1.0.0"], "1.0.0")
    try:
        tokens = tokens_for(backend, "1.0.0")
        run_tasks(backend, redis_server, redis_client, ledger, tokens)
    finally:
        stop(worker)
    assert ledger.done_counts() == dict.fromkeys(tokens, 1)
    assert ledger.failed_counts() == {}
    starts = ledger.starts()
    assert {(s["release"], s["worker"], s["queue"]) for s in starts} == {
        ("1.0.0", expected_worker(backend, "1.0.0"), QUEUE)
    }
    assert all("config" not in s for s in starts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_1_1_0_refuses_to_start_without_its_greeting_and_records_it(
    backend, releases, redis_server, redis_client, ledger
):
    refused = start_to_exit(backend, redis_server.url, releases["1.1.0"], "1.1.0")
    assert refused.returncode != 0
    assert "MissingConfig: sampleapp 1.1.0 cannot start: SAMPLEAPP_GREETING not set" in refused.stdout
    assert not redis_client.keys("rq:worker:*") and not redis_client.keys("_kombu.binding.*")

    worker = start(backend, redis_server.url, releases["1.1.0"], "1.1.0", env={"SAMPLEAPP_GREETING": GREETING})
    try:
        tokens = tokens_for(backend, "1.1.0")
        run_tasks(backend, redis_server, redis_client, ledger, tokens)
    finally:
        stop(worker)
    assert ledger.done_counts() == dict.fromkeys(tokens, 1)
    assert ledger.failed_counts() == {}
    assert {(s["release"], s["worker"]) for s in ledger.starts()} == {("1.1.0", expected_worker(backend, "1.1.0"))}
    assert [s["config"] for s in ledger.starts()] == [{"SAMPLEAPP_GREETING": GREETING}] * len(tokens)


@pytest.mark.parametrize("backend", BACKENDS)
def test_1_2_0_fails_exactly_a_third_and_a_good_release_replays_them(
    backend, releases, redis_server, redis_client, ledger
):
    tokens = tokens_for(backend, "1.2.0", 12)
    bad = {t for t in tokens if zlib.crc32(t.encode()) % 3 == 0}
    assert bad and bad != set(tokens)  # the test means something: some fail, some pass

    worker = start(backend, redis_server.url, releases["1.2.0"], "1.2.0")
    try:
        run_tasks(backend, redis_server, redis_client, ledger, tokens)
    finally:
        stop(worker)
    assert ledger.failed_counts() == dict.fromkeys(bad, 1)
    assert ledger.done_counts() == dict.fromkeys(set(tokens) - bad, 1)
    assert {s["release"] for s in ledger.starts()} == {"1.2.0"}

    replay = start(backend, redis_server.url, releases["1.0.0"], "1.0.0")
    try:
        enqueue(backend, redis_server, redis_client, sorted(bad))
        assert wait_until(lambda: set(ledger.done_counts()) == set(tokens), timeout=30), ledger.done_counts()
    finally:
        stop(replay)
    assert ledger.done_counts() == dict.fromkeys(tokens, 1)
    assert ledger.lost() == set()
    assert {s["token"] for s in ledger.starts() if s["release"] == "1.0.0"} == bad


@pytest.mark.parametrize("backend", BACKENDS)
def test_1_3_0_exits_at_start_with_its_import_error(backend, releases, redis_server, redis_client):
    result = start_to_exit(backend, redis_server.url, releases["1.3.0"], "1.3.0")
    assert result.returncode != 0, result.stdout
    assert "ImportError: cannot import name 'record_refund' from 'sampleapp.ledger'" in result.stdout
    # it failed before it registered: no worker in Redis, no queue consumed
    assert not redis_client.keys("rq:worker:*") and not redis_client.keys("_kombu.binding.*")


@pytest.mark.parametrize("backend", BACKENDS)
def test_1_8_0_takes_its_failing_new_path_only_for_the_keys_its_open_gate_picks(
    backend, releases, redis_server, redis_client, ledger
):
    gate = sample_wheels.NEW_TOTALS
    tokens = tokens_for(backend, "1.8.0", 40)
    env = {"SAMPLEAPP_GREETING": GREETING, "QUEUEOPS_POOL": POOL}
    worker = start(backend, redis_server.url, releases["1.8.0"], "1.8.0", env=env)
    try:
        closed = tokens[:10]  # the gate is closed: the old path, every task finishes
        run_tasks(backend, redis_server, redis_client, ledger, closed)
        assert ledger.done_counts() == dict.fromkeys(closed, 1)

        gates.open_gate(redis_client, POOL, gate, percentage=50, release="1.8.0", expires_in=None, check_mode=False)
        half = tokens[10:]
        run_tasks(backend, redis_server, redis_client, ledger, half)

        gates.close_gates(redis_client, POOL, names=None, release="1.8.0", check_mode=False)
        failed = sorted(ledger.failed_counts())
        enqueue(backend, redis_server, redis_client, failed)  # replayed with the gate closed: the old path
        assert wait_until(lambda: set(ledger.done_counts()) == set(tokens), timeout=30), ledger.done_counts()
    finally:
        stop(worker)

    # the app picks the keys by the rule the module documents (gates.takes_new_path), not by its own
    opened = {"percentage": 50}
    picked = {t for t in half if gates.takes_new_path(opened, gate, t)}
    assert picked and picked != set(half)  # the test means something: some keys take the new path, some do not
    starts = ledger.starts()
    assert {s["token"] for s in starts if s.get("gates") == [gate]} == picked
    assert all("gates" not in s for s in starts[: len(closed)])
    assert set(failed) == {t for t in picked if zlib.crc32(t.encode()) % 3 == 0}
    assert failed  # some of the new path's tasks failed, and ran again on the old path
    assert ledger.done_counts() == dict.fromkeys(tokens, 1)
    assert ledger.lost() == set()


@pytest.mark.parametrize("backend", BACKENDS)
def test_1_9_1_sends_and_runs_totals_on_its_own_queue_which_an_older_release_cannot_run(
    backend, releases, redis_server, redis_client, ledger
):
    routed = subprocess.run(
        [
            str(releases["1.9.1"] / "venv" / "bin" / "python"),
            "-c",
            "from sampleapp import routing; print(routing.queue_for('totals', 'q'), routing.queue_for('work', 'q'))",
        ],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    own = f"{QUEUE}@1.9.1"
    assert routed.stdout.split() == ["q@1.9.1", "q"]
    env = {"SAMPLEAPP_GREETING": GREETING}
    refused, ran = tokens_for(backend, "1.8.0-totals", 4), tokens_for(backend, "1.9.1-totals", 8)
    older = start(backend, redis_server.url, releases["1.8.0"], "1.8.0", env=env, queues=[QUEUE, own])
    try:  # handed a totals task, a release without it records the start and fails it
        ledger.note_enqueued(*refused)
        enqueue(backend, redis_server, redis_client, refused, queue=own, task="totals")
        assert wait_until(lambda: set(ledger.failed_counts()) == set(refused), timeout=30), ledger.failed_counts()
    finally:
        stop(older)
    worker = start(backend, redis_server.url, releases["1.9.1"], "1.9.1", env=env, queues=[QUEUE, own])
    try:
        ledger.note_enqueued(*ran)
        enqueue(backend, redis_server, redis_client, ran, queue=own, task="totals")
        assert wait_until(lambda: set(ledger.done_counts()) == set(ran), timeout=30), ledger.done_counts()
    finally:
        stop(worker)
    starts = {s["token"]: s for s in ledger.starts()}
    assert {(starts[t]["release"], starts[t]["task"], starts[t]["queue"]) for t in refused} == {
        ("1.8.0", "totals", own)
    }
    assert {(starts[t]["release"], starts[t]["task"], starts[t]["queue"]) for t in ran} == {("1.9.1", "totals", own)}
    assert ledger.done_counts() == dict.fromkeys(ran, 1)
